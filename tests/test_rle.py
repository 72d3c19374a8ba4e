"""SIIM RLE masks: exact hand examples, and the real table shipped with torchxrayvision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dgx.errors import DgxError
from dgx.masks.rle import abnormality_mask, any_pool, decode_rle, encode_rle, load_rle_table, siim_rle_path
from tests.helpers import reference_dir as shared_reference


def reference_dir() -> Path:
    return shared_reference("cxr_p_splits.csv")


@pytest.fixture(scope="module")
def table() -> dict[str, list[str]]:
    return load_rle_table()


def test_decode_hand_example_is_relative_and_column_major():
    # 4 rows x 3 cols. Run 1: flat 1..2; run 2 starts 3 after run 1's end: flat 6.
    # Column-major flat index = col * height + row.
    mask = decode_rle("1 2 3 1", height=4, width=3)
    expected = np.zeros((4, 3), dtype=bool)
    expected[1, 0] = expected[2, 0] = expected[2, 1] = True
    assert mask.dtype == bool and mask.shape == (4, 3)
    np.testing.assert_array_equal(mask, expected)
    assert encode_rle(expected) == "1 2 3 1"


def test_negative_and_empty():
    assert not decode_rle("-1", 8, 8).any()
    assert encode_rle(np.zeros((8, 8), bool)) == "-1"
    assert not abnormality_mask([], size=4).any()


def test_encode_full_first_and_last_pixel():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[4, 4] = True
    assert encode_rle(mask) == "0 1 23 1"
    np.testing.assert_array_equal(decode_rle("0 1 23 1", 5, 5), mask)


@pytest.mark.parametrize("bad", ["1 2 3", "a b", "0 100", "-2 3"])
def test_bad_rle_raises(bad):
    with pytest.raises(ValueError):
        decode_rle(bad, 4, 4)


def test_any_pool_keeps_single_pixels_in_their_cell():
    mask = np.zeros((10, 10), bool)
    mask[9, 0] = True
    pooled = any_pool(mask, 3)  # 10 -> 3 cells of 4, 3, 3 pixels
    assert pooled.shape == (3, 3) and pooled.sum() == 1 and pooled[2, 0]
    with pytest.raises(ValueError):
        any_pool(mask, 11)


def test_table_counts_match_reference_readme(table):
    assert len(table) == 12_047
    assert sum(1 for runs in table.values() if runs) == 2_669
    # Every CSV row is kept: one per region for positives, one "-1" per negative.
    assert sum(max(1, len(runs)) for runs in table.values()) == 12_954
    rows = pd.read_csv(siim_rle_path())
    assert len(rows) == 12_954 and rows.columns[1] == " EncodedPixels"  # the shipped header's leading space


def test_real_round_trip(table):
    rles = [r for runs in table.values() for r in runs][:300]
    for rle in rles:
        assert encode_rle(decode_rle(rle)) == rle


def test_multi_row_image_is_the_union(table):
    multi = [i for i, runs in table.items() if len(runs) >= 2]
    assert len(multi) > 0
    runs = table[multi[0]]
    parts = [decode_rle(r) for r in runs]
    union = abnormality_mask(runs)
    np.testing.assert_array_equal(union, np.logical_or.reduce(parts))
    assert union.sum() > max(p.sum() for p in parts)
    pooled = abnormality_mask(runs, size=128)
    np.testing.assert_array_equal(pooled, any_pool(union, 128))
    assert pooled.sum() * 64 >= union.sum()  # any-pooling never loses area


def test_real_masks_sit_in_the_upper_lungs(table):
    """The transpose matters: CXR-P train+val positives put ~71% of their mass in the upper half."""
    splits = pd.read_csv(reference_dir() / "cxr_p_splits.csv")
    ids = splits.loc[splits["split"].isin(["train", "val"]) & (splits["label"] == 1), "image_id"]
    total = sum(abnormality_mask(table[i]).astype(np.int32) for i in ids if table.get(i))
    upper = total[:512].sum() / total.sum()
    untransposed = total.T[:512].sum() / total.sum()
    assert 0.69 < upper < 0.73
    assert untransposed < 0.65  # without the transpose the apical peak is lost


def test_missing_table_is_a_user_error(tmp_path):
    with pytest.raises(DgxError, match="not found"):
        load_rle_table(tmp_path / "nope.csv.gz")
