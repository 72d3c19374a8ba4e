"""Offline preparation of real data, apart from what training reads (dgx/data).

``dgx data prepare`` and ``dgx data cache`` run this once per dataset:
``sources/`` (one module per public dataset, one registry), target curation
(``curate``), manifests (``manifest``), lung segmentation (``lungseg``) and the
cache builder (``cache``: decode, masks, compaction, index). Training reads
only the finished cache, through :mod:`dgx.data.cache`.
"""
