"""Real-data datasets ``cxr-p`` and ``cxr-p-full``: prepared manifests + decoded caches -> Bundle.

Expected layout under ``data_dir`` (``DGX_DATA_DIR``; both folders can be moved
with the options ``manifest_dir=`` and ``cache_dir=``)::
    data_dir/manifests/<domain>.<split>.csv   written by `dgx data prepare SOURCE`
    data_dir/cache/<hash>/                    written by `dgx data cache --root ROOT`

The source is ``<name>.{train,val,test}`` (plus ``<name>.pool`` where prepared and
cached: the pool ``--profile official`` redraws train/val from); targets are whichever of
``chestx-ray8-age``, ``chexpert``, ``chexpert-age`` and ``mimic-cxr`` have a
test manifest *and* a cache holding it at the requested size. A cache holds a
manifest when its index lists that manifest's name with the same sha256, so an
edited manifest is never served stale pixels. Nothing here decodes an image:
training reads only the memory-mapped cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dgx.data.base import Bundle, Split
from dgx.data.cache import load_cache
from dgx.data.cache import sha256_file as _sha
from dgx.errors import DgxError, unknown_choice

log = logging.getLogger("dgx")

NAMES = ("cxr-p", "cxr-p-full")
TARGETS = ("chestx-ray8-age", "chexpert", "chexpert-age", "mimic-cxr")
TARGET_SOURCE = {"chestx-ray8-age": "chestxray8", "chexpert": "chexpert", "chexpert-age": "chexpert",
                 "mimic-cxr": "mimic"}
DEFAULT_SIZE = 224
OPTIONS = ("manifest_dir", "cache_dir")


def load_real(name: str, options: Mapping[str, str], image_size: int | None, data_dir: Path) -> Bundle:
    """The source splits of ``name`` and every available cached target, memory-mapped."""
    if name not in NAMES:
        raise unknown_choice("real dataset", name, NAMES)
    for key in options:
        if key not in OPTIONS:
            raise unknown_choice(f"{name} option", key, OPTIONS)
    data_dir = Path(data_dir)
    manifest_dir = Path(options.get("manifest_dir") or data_dir / "manifests")
    cache_dir = Path(options.get("cache_dir") or data_dir / "cache")
    size = int(image_size or DEFAULT_SIZE)
    caches = _scan(cache_dir, size)
    loaded: dict[Path, dict[str, np.ndarray]] = {}

    def split(key: str, required: bool) -> Split | None:
        path = manifest_dir / f"{key}.csv"
        if not path.is_file():
            if required:
                raise DgxError(f"manifest {path} not found; run `dgx data prepare siim --root SIIM_ROOT "
                               f"--opt splits=cxr_p_splits.csv --out {manifest_dir}`")
            return None
        sha = _sha(path)
        hit = next(((c, idx["manifests"][key]) for c, idx in caches
                    if idx["manifests"].get(key, {}).get("sha256") == sha), None)
        if hit is None:
            own = key.startswith(f"{name}.")
            source = "siim" if own else TARGET_SOURCE[key.rsplit(".", 1)[0]]
            msg = (f"no {size} px cache of {path} under {cache_dir}; run `dgx data cache --manifests {path} "
                   f"--root {source.upper()}_ROOT --size {size} --out {cache_dir}`")
            if required:
                raise DgxError(msg)
            log.warning("%s; skipping %s", msg, "the pool (only --profile official reads it)" if own else f"target {key}")
            return None
        folder, rng = hit
        arrays = loaded.setdefault(folder, load_cache(folder))
        sl = slice(rng["start"], rng["stop"])
        masks = {kind: arrays[kind][sl] for kind in arrays if kind not in ("images", "images_released", "labels")}
        released = arrays["images_released"][sl] if "images_released" in arrays else None
        return Split(arrays["images"][sl], np.asarray(arrays["labels"][sl], dtype=np.int64), masks,
                     groups=_groups(folder, sl), released_images=released)

    train, val, test = (split(f"{name}.{s}", True) for s in ("train", "val", "test"))
    pool = split(f"{name}.pool", False) if (manifest_dir / f"{name}.pool.csv").is_file() else None
    targets = {t: s for t in TARGETS if (s := split(f"{t}.test", False)) is not None}
    for t, s in targets.items():  # targets need no constraint: every kind all-ones
        s.masks = {kind: _ones(len(s), size) for kind in s.masks}
    blob = json.dumps({"name": name, "size": size,
                       "caches": sorted(str(f.name) for f in loaded),
                       "targets": sorted(targets), "pool": pool is not None}, sort_keys=True)
    return Bundle(name=name, source=name, train=train, val=val, test=test, targets=targets,
                  fingerprint=hashlib.sha256(blob.encode()).hexdigest()[:16], pool=pool)


def _groups(folder: Path, sl: slice) -> dict[str, np.ndarray]:
    """Subgroup keys (age band, sex, view) of a cache's rows ``sl``, from the manifest rows it kept."""
    import pandas as pd  # pandas: only when metadata tables are read

    from dgx.data.groups import from_rows  # pandas: only when metadata tables are read

    path = folder / "rows.csv"
    if not path.is_file():
        return {}
    rows = pd.read_csv(path, usecols=lambda c: c in ("age", "sex", "view"), dtype={"sex": str, "view": str},
                       keep_default_na=False, na_values={"age": [""]})
    return from_rows(rows.iloc[sl])


def _ones(n: int, size: int) -> np.ndarray:
    # A broadcast view: constant memory whatever n is.
    return np.broadcast_to(np.ones((1, size, size), dtype=np.uint8), (n, size, size))


def _scan(cache_dir: Path, size: int) -> list[tuple[Path, dict]]:
    """Complete caches at ``size`` under ``cache_dir``, newest first."""
    out = []
    if cache_dir.is_dir():
        for index in cache_dir.glob("*/index.json"):
            try:
                idx = json.loads(index.read_text())
            except (OSError, ValueError):
                continue
            if idx.get("size") == size:
                out.append((index.parent, idx))
    return sorted(out, key=lambda t: -t[0].stat().st_mtime)
