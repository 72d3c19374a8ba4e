"""The selection rules (dgx/selection.py) and the regret table, against hand examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dgx.data.base import Split
from dgx.report.selection import selection_rows
from dgx.selection import Candidate, pick, shuffled_background


def _split() -> Split:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    labels = np.array([1, 1, 0, 0, 0, 1])
    mask = np.ones((6, 8, 8), dtype=np.uint8)
    mask[0] = 0
    mask[0, 2:5, 2:5] = 1  # positives 0 and 1 have masks of their own; 5 is an unannotated positive
    mask[1] = 0
    mask[1, :, :3] = 1
    return Split(images, labels, {"abnormality": mask})


def test_shuffled_background_moves_only_background_pixels_and_every_image_alike():
    split = _split()
    out = shuffled_background(split, "abnormality")
    assert out is not None and (out.labels == split.labels).all()
    own = {0: split.masks["abnormality"][0] > 0, 1: split.masks["abnormality"][1] > 0}
    for i in range(len(split)):
        before, after = split.images[i], out.images[i]
        # each image keeps exactly its pixel values (a permutation of itself)
        assert sorted(before.ravel()) == sorted(after.ravel())
        # the region kept is the image's own mask, or (no mask of its own) a positive's, borrowed
        kept = [m for m in own.values() if (before[m] == after[m]).all()]
        assert kept, f"image {i} kept no mask region intact"
        if i in own:
            assert (before[own[i]] == after[own[i]]).all()
        assert not (before == after).all(), f"image {i} was not shuffled"


def test_shuffled_background_is_fixed_and_none_without_masks():
    split = _split()
    a, b = shuffled_background(split, "abnormality"), shuffled_background(split, "abnormality")
    assert (a.images == b.images).all()  # every training is validated on the same copies
    blank = Split(split.images, split.labels, {"abnormality": np.ones_like(split.images)})
    assert shuffled_background(blank, "abnormality") is None


def test_val_rule_picks_the_best_validation_auroc_and_breaks_ties_on_the_key():
    c = [Candidate("b", 0.1, 0.9), Candidate("a", 0.3, 0.9), Candidate("c", 1.0, 0.8)]
    assert pick(c, "val") == 1  # tie at 0.9: key "a" < "b"


def test_shuffled_rule_reads_the_shuffled_auroc_and_falls_back_to_val_where_unrecorded():
    c = [Candidate("a", 0.1, 0.99, shuffled=0.55), Candidate("b", 1.0, 0.80, shuffled=0.70)]
    assert pick(c, "shuffled") == 1
    c[1] = Candidate("b", 1.0, 0.80)  # a run from before the number was recorded
    assert pick(c, "shuffled") == 0


def test_lam_ci_rule_takes_the_largest_lam_inside_the_best_points_interval():
    c = [Candidate("a", 0.1, 0.95, val_low=0.90), Candidate("b", 0.3, 0.91, val_low=0.85),
         Candidate("c", 1.0, 0.89, val_low=0.82), Candidate("d", 3.0, 0.60, val_low=0.50)]
    assert pick(c, "lam-ci") == 1  # 0.91 >= 0.90 (best's lower end); 0.89 is outside
    c[0] = Candidate("a", 0.1, 0.95, val_low=0.88)
    assert pick(c, "lam-ci") == 2
    with pytest.raises(Exception, match="selection rule"):
        pick(c, "bogus")


def _search(points: list[tuple[float, float, float, float, float]]) -> pd.DataFrame:
    """Rows as load_runs gives them: per trial (λ, val, val_low, shuffled, target average) on one source and two
    targets whose mean is the target average."""
    rows = []
    for trial, (lam, val, low, shuffled, target) in enumerate(points):
        for domain, role, auroc in (("src", "source", 0.99), ("t1", "target", target - 0.02),
                                    ("t2", "target", target + 0.02)):
            rows.append({"study": "s", "trial": trial, "dataset": "d", "method": "rrr", "mask": "periphery",
                         "phase": "search", "seed": 0, "domain": domain, "role": role, "auroc": auroc,
                         "run_id": f"r{trial}", "profile": "paper", "val_auroc": val, "lam": lam,
                         "val_auroc_low": low, "val_shuffled_auroc": shuffled, "val_swapped_auroc": shuffled,
                         "draw": 1000.0})
    return pd.DataFrame(rows)


def test_regret_is_the_best_points_target_average_minus_the_picks():
    search = _search([(0.1, 0.99, 0.97, 0.55, 0.60), (0.3, 0.98, 0.96, 0.65, 0.70), (1.0, 0.90, 0.86, 0.75, 0.66)])
    (row,) = selection_rows(search)
    assert row["points"] == 3 and row["best_lam"] == 0.3 and math.isclose(row["best"], 0.70)
    assert row["val_lam"] == 0.1 and math.isclose(row["val_regret"], 0.10)
    assert row["shuffled_lam"] == 1.0 and math.isclose(row["shuffled_regret"], 0.04)
    assert row["swapped_lam"] == 1.0 and math.isclose(row["swapped_regret"], 0.04)
    assert row["lam-ci_lam"] == 0.3 and math.isclose(row["lam-ci_regret"], 0.0)


def test_a_maskless_method_or_a_single_point_has_no_selection_row():
    search = _search([(0.1, 0.99, 0.97, 0.55, 0.60), (0.3, 0.98, 0.96, 0.65, 0.70)])
    assert selection_rows(search.assign(method="erm", mask="none")) == []
    assert selection_rows(search[search["trial"] == 0]) == []


def test_swapped_background_keeps_the_mask_region_and_takes_the_rest_from_the_other_class():
    from dgx.selection import swapped_background

    split = _split()
    out = swapped_background(split, "abnormality")
    labels = split.labels
    masks = {j: split.masks["abnormality"][j] > 0 for j in (0, 1)}  # the two images with masks of their own
    blank = np.zeros(split.images.shape[1:], dtype=bool)
    for i in range(len(split)):
        kept = out.images[i] == split.images[i]
        # every pixel is the image's own or that of one donor of the other class; inside the donor's own mask
        # (its object) and inside the image's own, the pixels stay the image's: no object is transplanted
        assert any(((out.images[i] == split.images[j]) | kept).all() and kept[masks.get(j, blank)].all()
                   and kept[masks.get(i, blank)].all() for j in range(len(split)) if labels[j] != labels[i]), i
    own = split.masks["abnormality"][0] > 0
    assert (out.images[0][own] == split.images[0][own]).all()
    one_class = Split(split.images[:2], split.labels[:2], {"abnormality": split.masks["abnormality"][:2]})
    assert swapped_background(one_class, "abnormality") is None


def test_swapped_rule_reads_the_swapped_auroc():
    c = [Candidate("a", 0.1, 0.99, swapped=0.20), Candidate("b", 1.0, 0.80, swapped=0.70)]
    assert pick(c, "swapped") == 1
