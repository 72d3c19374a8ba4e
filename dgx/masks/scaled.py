"""Scaled-abnormality masks, the paper's naive way to add background.

The tight annotation is max-pooled onto a coarse grid and blown back up, so
every grid cell the abnormality touches becomes allowed. The result always
contains the original mask and grows it by up to one cell in each direction.
"""

from __future__ import annotations

import numpy as np


def _cell_index(n: int, grid: int) -> np.ndarray:
    """Grid cell of each of ``n`` pixels; cells differ by at most one pixel in size.

    Sizes not divisible by ``grid`` are split as evenly as possible (as
    adaptive max-pooling does), so no pixel is dropped or left without a cell.
    """
    return (np.arange(n) * grid) // n


def scaled_mask(mask: np.ndarray, grid: int) -> np.ndarray:
    """Max-pool a (H, W) or (N, H, W) mask to ``grid`` x ``grid`` cells, then upsample.

    Returns the same shape and dtype as ``mask``. ``grid`` must be between 1 and
    the smaller image side; 1 gives "any pixel set -> whole image".
    """
    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {m.shape}")
    h, w = m.shape[-2:]
    if not 1 <= grid <= min(h, w):
        raise ValueError(f"grid must be in [1, {min(h, w)}], got {grid}")
    stack = m.reshape((-1, h, w)).astype(bool)
    ry, rx = _cell_index(h, grid), _cell_index(w, grid)
    # reduceat ORs each run of pixels that share a cell; every cell is non-empty
    # because grid <= side, so the start indices are strictly increasing.
    starts_y = np.searchsorted(ry, np.arange(grid))
    starts_x = np.searchsorted(rx, np.arange(grid))
    pooled = np.logical_or.reduceat(np.logical_or.reduceat(stack, starts_y, axis=1), starts_x, axis=2)
    up = pooled[:, ry[:, None], rx[None, :]]
    return up.reshape(m.shape).astype(m.dtype)
