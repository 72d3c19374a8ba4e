"""Gaze heatmaps: image orientation (row from x, column from y) by hand and against real RLE masks."""

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


def test_x_is_the_row_and_y_the_column():
    heat = gaze_heatmap(fix([0.1], [0.9], [1]), size=10, sigma=0)
    assert np.argwhere(heat > 0).tolist() == [[1, 9]]  # row from x (small: top), column from y (large: right)
    smooth = gaze_heatmap(fix([0.1], [0.9], [1]), size=32, sigma=2)
    assert np.unravel_index(smooth.argmax(), smooth.shape) == (3, 28)
    assert smooth.sum() == pytest.approx(1.0)


def test_dwell_weights_accumulate_and_edges_clip():
    heat = gaze_heatmap(fix([0.05, 0.06, 0.55, 1.07], [0.05, 0.05, 0.55, -0.01], [2, 1, 1, 4]), size=10, sigma=0)
    # Two fixations in the same cell add up (3), x past the bottom edge lands in the last row.
    assert heat[0, 0] == pytest.approx(3 / 8)
    assert heat[5, 5] == pytest.approx(1 / 8)
    assert heat[9, 0] == pytest.approx(4 / 8)


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
    assert cy == pytest.approx((np.clip(rows["x"], 0, 1) * w).sum() * size - 0.5, abs=1.0)  # row from x
    assert cx == pytest.approx((np.clip(rows["y"], 0, 1) * w).sum() * size - 0.5, abs=1.0)


def test_real_gaze_follows_the_rle_mask_on_both_axes():
    """Each positive's gaze centroid follows its SIIM RLE mask's centroid: rows with rows, columns with columns.

    This is the test that would have caught the transposed binning (r ~ 0.01 then).
    """
    from dgx.masks.rle import abnormality_mask, load_rle_table

    gaze = load_gaze(reference_dir() / "cxr_p_gaze.csv.gz")
    table = load_rle_table(None)
    ids = [i for i in gaze["image_id"].unique() if table.get(i)]
    assert len(ids) >= 200  # the reference README: 268 positives with both
    heats = gaze_heatmaps(gaze, ids, size=64, sigma=0)
    gaze_c = np.array([ndimage.center_of_mass(h) for h in heats]) / 64
    mask_c = np.array([ndimage.center_of_mass(abnormality_mask(table[i], 64)) for i in ids]) / 64
    r = np.corrcoef(gaze_c.T, mask_c.T)[:2, 2:]  # [gaze row/col] x [mask row/col]
    assert r[0, 0] > 0.4 and r[1, 1] > 0.6, r  # measured 0.56 and 0.79 in the reference README
    assert abs(r[0, 1]) < 0.2 and abs(r[1, 0]) < 0.2, r  # the transposed pairing is uncorrelated


def test_real_left_and_upper_shares_match_the_raw_fixations():
    gaze = load_gaze(reference_dir() / "cxr_p_gaze.csv.gz")
    ids = list(gaze["image_id"].unique()[:200])
    sub = gaze[gaze["image_id"].isin(ids)]
    heats = gaze_heatmaps(sub, ids, size=64, sigma=0)
    # Per-image normalised, so the raw shares are per-image dwell shares, averaged.
    g = sub.assign(left=sub["y"] < 0.5, upper=sub["x"] < 0.5)  # columns from y, rows from x
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
