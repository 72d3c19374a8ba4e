"""The released code's mask geometry (``dataloader.py``), for the ``official`` profile.

* abnormality: the full-resolution mask resized to the training size with
  scikit-image's ``resize`` (anti-aliased, bilinear), then ``> 0``. Any pixel the
  smoothing reaches counts, so the mask grows: on the 156 single-region positives
  of CXR-P's pool dgx's any-pooled masks are a median 0.66x the released area.
* scaled: max-pooled onto a grid (16x16 in the official profile: dgx's pick, the
  released code takes it from a flag no released script sets), upsampled
  bilinearly, then ``> 0``: every pixel with any weight from a set cell counts,
  about half a cell beyond it.
"""

from __future__ import annotations

import numpy as np

from dgx.masks.rle import any_pool


def released_resize(mask: np.ndarray, size: int) -> np.ndarray:
    """A full-resolution (H, W) mask at (size, size) as the released code made it: uint8 {0, 1}."""
    from skimage.transform import resize  # scikit-image: only for the released masks

    m = np.asarray(mask, dtype=np.float64)
    if m.shape == (size, size):
        return (m > 0).astype(np.uint8)
    return (resize(m, (size, size)) > 0).astype(np.uint8)


def released_scaled(mask: np.ndarray, grid: int = 16) -> np.ndarray:
    """(H, W) or (N, H, W) mask: max-pool onto ``grid`` x ``grid`` cells, bilinear back up, ``> 0``."""
    from skimage.transform import resize  # scikit-image: only for the released masks

    m = np.asarray(mask)
    stack = m.reshape((-1, *m.shape[-2:]))
    h, w = stack.shape[-2:]
    out = np.empty(stack.shape, dtype=np.uint8)
    for i, one in enumerate(stack):
        pooled = any_pool(one > 0, grid).astype(np.float64)  # exact cells when the side divides by grid
        out[i] = resize(pooled, (h, w), order=1) > 0
    return out.reshape(m.shape)


__all__ = ["released_resize", "released_scaled"]
