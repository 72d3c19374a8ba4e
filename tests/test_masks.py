"""Periphery and scaled masks on hand-made inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from dgx.masks import all_ones_for_negatives, periphery_mask, periphery_masks, scaled_mask


def _disk(size: int, cy: float, cx: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - cy, xx - cx)
    return d <= r, d


def test_periphery_band_width_on_disk():
    disk, d = _disk(101, 50, 50, 30)
    band = periphery_mask(disk, width=0.1)
    diam = np.sqrt(4 * disk.sum() / np.pi)  # ~60 px, so the band is ~6 px wide
    assert diam == pytest.approx(60, abs=0.5)
    assert band.dtype == bool and not (band & ~disk).any()
    # Every band pixel is within 0.1 * diam (+ 1 px for the discrete boundary) of the rim.
    assert (30 - d[band]).max() <= 0.1 * diam + 1
    # ...and everything that close to the rim is in the band.
    assert band[disk & (30 - d <= 0.1 * diam - 1)].all()
    assert band[50, 20] and band[50, 80] and band[20, 50]  # boundary pixels
    assert not band[50, 50] and not band[50, 36]  # centre and 14 px deep
    ring_area = np.pi * (30**2 - (30 - 0.1 * diam) ** 2)
    assert band.sum() == pytest.approx(ring_area, rel=0.15)


def test_periphery_width_scales_per_component():
    big, _ = _disk(120, 40, 40, 30)
    small, _ = _disk(120, 90, 95, 10)
    band = periphery_mask(big | small, width=0.2)
    d_big = np.hypot(*(np.argwhere(band & big) - [40, 40]).T)
    d_small = np.hypot(*(np.argwhere(band & small) - [90, 95]).T)
    # Band depth ~0.2 x each disk's own diameter: ~12 px vs ~4 px.
    assert 30 - d_big.min() == pytest.approx(12, abs=1.5)
    assert 10 - d_small.min() == pytest.approx(4, abs=1.5)


def test_periphery_unites_abnormality_and_handles_empty():
    disk, _ = _disk(64, 32, 32, 20)
    abn = np.zeros_like(disk)
    abn[30:35, 30:35] = True  # deep in the centre, outside the band
    band = periphery_mask(disk, 0.1)
    assert not (band & abn).any()
    united = periphery_mask(disk, 0.1, abn)
    assert (united == (band | abn)).all()
    assert not periphery_mask(np.zeros((16, 16), bool), 0.2).any()
    stack = periphery_masks(np.stack([disk, disk]), 0.1, np.stack([abn, np.zeros_like(abn)]))
    assert (stack[0] == united).all() and (stack[1] == band).all()


def test_periphery_lung_touching_border_has_edge_there():
    lung = np.zeros((20, 20), bool)
    lung[:, :10] = True  # cut by the top, bottom and left borders
    band = periphery_mask(lung, 0.05)  # diam ~16 -> ~0.8 px, boundary row only
    assert band[10, 0] and band[0, 5] and band[10, 9]
    assert not band[10, 5]


def test_scaled_mask_exact_small_example():
    m = np.zeros((6, 6), np.uint8)
    m[1, 4] = 1
    m[4, 0] = 1
    expected = np.zeros((6, 6), np.uint8)
    expected[0:2, 4:6] = 1  # cell (0, 2) of a 3x3 grid of 2x2 cells
    expected[4:6, 0:2] = 1  # cell (2, 0)
    out = scaled_mask(m, 3)
    assert out.dtype == np.uint8 and (out == expected).all()


def test_scaled_mask_non_divisible_size():
    m = np.zeros((7, 5), bool)
    m[3, 1] = True
    # 7 rows in 3 cells -> rows [0,1,2] [3,4] [5,6]; 5 cols -> [0,1] [2,3] [4].
    expected = np.zeros((7, 5), bool)
    expected[3:5, 0:2] = True
    assert (scaled_mask(m, 3) == expected).all()


def test_scaled_mask_contains_input_and_is_constant_on_cells():
    rng = np.random.default_rng(0)
    m = rng.random((4, 48, 48)) > 0.995
    out = scaled_mask(m, 6)
    assert out.shape == m.shape and not (m & ~out).any()
    cells = out.reshape(4, 6, 8, 6, 8)
    assert (cells.min(axis=(2, 4)) == cells.max(axis=(2, 4))).all()
    assert out.sum() == 64 * cells.any(axis=(2, 4)).sum()
    assert scaled_mask(m[0], 1).all() and not scaled_mask(np.zeros((8, 8), bool), 4).any()
    with pytest.raises(ValueError):
        scaled_mask(m, 49)


def test_all_ones_for_negatives():
    masks = np.zeros((3, 4, 4), bool)
    masks[0, 1, 1] = True
    out = all_ones_for_negatives(masks, np.array([1, 0, 1]))
    assert out.dtype == np.uint8
    assert out[0].sum() == 1 and out[1].sum() == 16 and out[2].sum() == 0
