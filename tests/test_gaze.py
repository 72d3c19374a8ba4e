"""Gaze heatmaps: image orientation (row from y, column from x) by hand and on real fixations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from dgx.errors import DgxError
from dgx.masks.gaze import gaze_heatmap, gaze_heatmaps, gaze_mask, load_gaze
from tests.helpers import reference_dir as shared_reference


def reference_dir() -> Path:
    return shared_reference("cxr_p_gaze.csv.gz")


def fix(x, y, t) -> pd.DataFrame:
    return pd.DataFrame({"x": x, "y": y, "t": t})


def test_top_right_fixation_lights_up_top_right():
    heat = gaze_heatmap(fix([0.9], [0.1], [1]), size=10, sigma=0)
    assert np.argwhere(heat > 0).tolist() == [[1, 9]]  # row from y (small), column from x (large)
    smooth = gaze_heatmap(fix([0.9], [0.1], [1]), size=32, sigma=2)
    assert np.unravel_index(smooth.argmax(), smooth.shape) == (3, 28)
    assert smooth.sum() == pytest.approx(1.0)


def test_dwell_weights_accumulate_and_edges_clip():
    heat = gaze_heatmap(fix([0.05, 0.06, 0.55, 1.07], [0.05, 0.05, 0.55, -0.01], [2, 1, 1, 4]), size=10, sigma=0)
    # Two fixations in the same cell add up (3), x past the right edge lands in the last column.
    assert heat[0, 0] == pytest.approx(3 / 8)
    assert heat[5, 5] == pytest.approx(1 / 8)
    assert heat[0, 9] == pytest.approx(4 / 8)


def test_heatmap_rejects_empty_input():
    with pytest.raises(ValueError):
        gaze_heatmap(fix([], [], []), size=8, sigma=1)


def test_gaze_mask_keeps_the_top_quantile():
    heat = np.arange(100, dtype=float).reshape(10, 10)
    mask = gaze_mask(heat, 0.8)
    assert mask.sum() == 20 and mask[9].all() and not mask[:8].any()


def test_real_gaze_orientation():
    gaze = load_gaze(reference_dir() / "cxr_p_gaze.csv.gz")
    assert gaze["image_id"].nunique() == 1_250
    image_id = gaze["image_id"].iloc[0]
    rows = gaze[gaze["image_id"] == image_id]
    size = 256
    heat = gaze_heatmap(rows, size=size, sigma=0)
    cy, cx = ndimage.center_of_mass(heat)
    w = rows["t"] / rows["t"].sum()
    # Bins hold the pixel containing each fixation; their centre of mass is the weighted
    # mean position minus half a pixel of flooring (within a pixel).
    assert cy == pytest.approx((np.clip(rows["y"], 0, 1) * w).sum() * size - 0.5, abs=1.0)
    assert cx == pytest.approx((np.clip(rows["x"], 0, 1) * w).sum() * size - 0.5, abs=1.0)


def test_real_left_and_upper_shares_match_the_raw_fixations():
    gaze = load_gaze(reference_dir() / "cxr_p_gaze.csv.gz")
    ids = list(gaze["image_id"].unique()[:200])
    sub = gaze[gaze["image_id"].isin(ids)]
    heats = gaze_heatmaps(sub, ids, size=64, sigma=0)
    # Per-image normalised, so the raw shares are per-image dwell shares, averaged.
    g = sub.assign(left=sub["x"] < 0.5, upper=sub["y"] < 0.5)
    for col, share in (("left", heats[:, :, :32].sum((1, 2))), ("upper", heats[:, :32].sum((1, 2)))):
        raw = g.groupby("image_id").apply(lambda d: (d["t"] * d[col]).sum() / d["t"].sum(), include_groups=False)
        np.testing.assert_allclose(share, raw.loc[ids].to_numpy(), atol=1e-12)


def test_load_gaze_errors(tmp_path):
    with pytest.raises(DgxError, match="not found"):
        load_gaze(tmp_path / "missing.csv.gz")
    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,x\na,0.1\n")
    with pytest.raises(DgxError, match="lacks column"):
        load_gaze(bad)
