"""Model selection rules: which grid point a sweep keeps, from source data and masks only.

The paper picks the configuration with the best **source-validation AUROC**
(``val``, the default). On a source whose validation split carries the same
shortcut as its training split, that rule rewards keeping the shortcut: it
prefers the smallest λ. Three source-only alternatives can see the shortcut:

``swapped``
    AUROC on the source-validation images with their background taken from
    an image of the **other class**: every pixel outside both images' masks
    comes from the donor, every other pixel stays the image's own (so neither
    image's masked object is transplanted). A shortcut that lives in the
    background (a hospital token that marks the positives) now points the
    wrong way, so a model that reads it ranks the classes backwards; one that
    reads the region inside the mask is unaffected. An image without a mask of
    its own borrows a positive's, as below.
``shuffled``
    AUROC on the source-validation images with their background outside the
    mask shuffled, as ActDiff's training copies are (each image's background
    pixels permuted among themselves; inside the mask nothing moves). An image
    without a mask of its own (a negative, an unannotated positive) borrows a
    positive's mask, so both classes are shuffled alike and being shuffled says
    nothing about the label. A model that reads a shortcut outside the mask
    loses it here; one that reads the lesion keeps it.
``lam-ci``
    The largest λ whose validation AUROC lies within the 95% DeLong interval
    of the best grid point's: the most constrained model the validation
    split cannot tell apart from the best one.

Every rule reads only the source-validation split and the masks. A rule needs
a mask (``swapped``, ``shuffled``) or a λ (``lam-ci``); for a method with
neither (ERM) every rule is ``val``. The rules choose grid points; within a
training the checkpoint (the epoch) is the profile's (dgx/profiles.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dgx.checks import SELECTION_RULES as RULES
from dgx.data.base import Split, unconstrained
from dgx.errors import unknown_choice

DEFAULT_RULE = "val"  # the paper's
SHUFFLE_SEED = 0  # every training of every sweep is validated on the same shuffled copies


def _kept_regions(split: Split, kind: str, rng: np.random.Generator) -> np.ndarray | None:
    """bool (N, H, W): each image's own ``kind`` mask, or a positive's where it has none (None: no image has one)."""
    masks = np.asarray(split.masks[kind]) > 0
    own = ~unconstrained(masks)
    if not own.any():
        return None
    keep = masks.copy()
    free = np.flatnonzero(~own)
    keep[free] = masks[rng.choice(np.flatnonzero(own), len(free))]  # borrowed: treated like a positive
    return keep


def swapped_background(split: Split, kind: str, seed: int = SHUFFLE_SEED) -> Split | None:
    """``split`` with each image's background outside its ``kind`` mask taken from a random image of the other
    class (see the module text), or None where no image has a mask or a class is missing."""
    rng = np.random.default_rng(seed)
    keep = _kept_regions(split, kind, rng)
    labels = np.asarray(split.labels)
    if keep is None or len(np.unique(labels)) < 2:
        return None
    donor = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        mine, others = np.flatnonzero(labels == cls), np.flatnonzero(labels != cls)
        donor[mine] = rng.choice(others, len(mine))
    images = np.where(keep | keep[donor], split.images, np.asarray(split.images)[donor])
    return Split(images.astype(np.uint8), labels)


def shuffled_background(split: Split, kind: str, seed: int = SHUFFLE_SEED) -> Split | None:
    """``split`` with each image's background outside its ``kind`` mask shuffled (see the module text), or
    None where no image has a mask of its own (nothing says what is background)."""
    rng = np.random.default_rng(seed)
    keep = _kept_regions(split, kind, rng)
    if keep is None:
        return None
    images = np.array(split.images)
    for i in range(len(images)):
        background = ~keep[i]
        values = images[i][background]
        images[i][background] = values[rng.permutation(len(values))]
    return Split(images, np.asarray(split.labels))


@dataclass(frozen=True)
class Candidate:
    """One grid point as the rules see it: its λ and its source-validation scores."""

    key: str  # the point's identity (a run id): ties are broken on it, never on trial order
    lam: float
    val: float  # source-validation AUROC
    val_low: float = math.nan  # lower end of its 95% DeLong interval
    shuffled: float = math.nan  # AUROC on the shuffled-background validation copies
    swapped: float = math.nan  # AUROC on the swapped-background validation copies


def pick(candidates: Sequence[Candidate], rule: str = DEFAULT_RULE) -> int:
    """The index of the candidate ``rule`` selects (ties: the smaller key). A rule whose numbers a candidate
    lacks (a maskless method, a run from before they were recorded) falls back to ``val``."""
    if rule not in RULES:
        raise unknown_choice("selection rule", rule, RULES)
    if not candidates:
        raise ValueError("no candidates to select from")
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].key)
    by_val = max(order, key=lambda i: _value(candidates[i].val))
    for name in ("swapped", "shuffled"):
        if rule == name and all(math.isfinite(getattr(c, name)) for c in candidates):
            return max(order, key=lambda i: getattr(candidates[i], name))
    if rule == "lam-ci" and math.isfinite(candidates[by_val].val_low):
        low = candidates[by_val].val_low
        within = [i for i in order if _value(candidates[i].val) >= low]
        return max(within, key=lambda i: (candidates[i].lam, _value(candidates[i].val)))
    return by_val


def _value(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


__all__ = ["RULES", "DEFAULT_RULE", "Candidate", "pick", "shuffled_background", "swapped_background"]
