"""A dataset as a profile trains on it (dgx/profiles.py): as loaded (``paper``), or as the released code
had it (``official``): its decoding, its per-seed split and its masks.

``paper`` leaves the bundle as loaded. ``official`` swaps in the images as the
released code decoded them (every split), redraws train/val from the pool for
every seed, and swaps in the released code's masks for the training split.
Validation, test and target splits need no masks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dgx.data.base import Bundle, Split, unconstrained
from dgx.errors import DgxError
from dgx.masks.released import released_scaled
from dgx.profiles import RELEASED_SCALED_GRID, RELEASED_VAL_FRACTION, Profile

RELEASED_ABNORMALITY = "abnormality_released"  # cache mask kind: the released resize of the full-size mask
RELEASED_PERIPHERY = "periphery_released"  # cache mask kind: the periphery of the annotated positives only


def for_profile(bundle: Bundle, profile: Profile, seed: int, mask: str) -> Bundle:
    """``bundle`` as ``profile`` trains on it with this seed and mask kind."""
    if profile.decode == "released" and not bundle.native_masks:  # generated data: no file was decoded
        bundle = released_decoding(bundle)
    if profile.source_split == "redraw":
        train, val = redraw(pool_of(bundle), seed)
        bundle = dataclasses.replace(bundle, train=train, val=val)
    if profile.masks == "released" and mask in ("abnormality", "scaled"):
        bundle = dataclasses.replace(bundle, train=_released_masks(bundle, mask))
    if profile.masks == "released" and mask == "periphery":
        bundle = dataclasses.replace(bundle, train=_annotated_periphery(bundle))
    return bundle


# Real datasets whose released pool is a list of its own, in its own order (the manifest <name>.pool).
POOLS = {"cxr-p": "the 951 images with gaze (trainval_gaze)", "cxr-p-full": "its 8,540 train+val images "
         "(trainval_full) in the list's order"}


def pool_of(bundle: Bundle) -> Split:
    """The train+val pool: the dataset's own (CXR-P: the 951 gaze images; CXR-P Full: its 8,540 in the
    list's order) or, on generated data, train and val together."""
    if bundle.pool is not None:
        return bundle.pool
    if bundle.name in POOLS:
        raise DgxError(f"--profile official splits {bundle.name} from {POOLS[bundle.name]}, which this data lacks; "
                       f"prepare with `dgx data prepare siim --opt splits=cxr_p_splits.csv`, then cache "
                       f"{bundle.name}.pool.csv with the other manifests")
    return concat(bundle.train, bundle.val)


def released_decoding(bundle: Bundle) -> Bundle:
    """Every split of a real ``bundle`` with its images as the released code decoded them."""
    def swap(split: Split) -> Split:
        if split.released_images is None:
            raise DgxError(f"the {bundle.name} cache lacks the images as the released code decoded them (it "
                           "predates them); rebuild it with `dgx data cache` to train --profile official")
        return dataclasses.replace(split, images=split.released_images, _filled={})

    pool = None if bundle.pool is None else swap(bundle.pool)
    return dataclasses.replace(bundle, train=swap(bundle.train), val=swap(bundle.val), test=swap(bundle.test),
                               targets={k: swap(s) for k, s in bundle.targets.items()}, pool=pool)


def redraw(pool: Split, seed: int, val_fraction: float = RELEASED_VAL_FRACTION) -> tuple[Split, Split]:
    """(train, val): the released ``StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)``."""
    from sklearn.model_selection import StratifiedShuffleSplit  # scikit-learn: only for a redrawn split

    labels = np.asarray(pool.labels)
    if min(np.bincount(labels, minlength=2)) < 2:
        raise DgxError(f"the train+val pool ({len(labels)} images) needs at least 2 images of each class to be "
                       "split 80/20 stratified; add images or use --profile paper")
    sss = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(sss.split(np.zeros(len(labels)), labels))
    return take(pool, np.sort(train_idx)), take(pool, np.sort(val_idx))


def take(split: Split, index: np.ndarray) -> Split:
    released = None if split.released_images is None else np.asarray(split.released_images[index])
    return Split(np.asarray(split.images[index]), np.asarray(split.labels[index]),
                 {k: np.asarray(m[index]) for k, m in split.masks.items()},
                 {k: np.asarray(m[index]) for k, m in split.anatomy.items()}, released_images=released)


def concat(a: Split, b: Split) -> Split:
    def join(x: dict, y: dict) -> dict:
        return {k: np.concatenate([x[k], y[k]]) for k in x if k in y}

    released = (None if a.released_images is None or b.released_images is None
                else np.concatenate([a.released_images, b.released_images]))
    return Split(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]),
                 join(a.masks, b.masks), join(a.anatomy, b.anatomy), released_images=released)


def _released_masks(bundle: Bundle, mask: str) -> Split:
    train = bundle.train
    if RELEASED_ABNORMALITY in train.masks:
        abn = np.asarray(train.masks[RELEASED_ABNORMALITY])
    elif bundle.native_masks:  # drawn at this size: the released resize is the identity
        abn = np.asarray(train.masks["abnormality"])
    else:
        raise DgxError(f"the {bundle.name} cache has no released-geometry abnormality masks (it predates them); "
                       "rebuild it with `dgx data cache` to train --profile official")
    masks = dict(train.masks)
    if mask == "abnormality":
        masks["abnormality"] = abn
    else:
        scaled = np.ones_like(abn)
        constrained = ~unconstrained(abn)
        if constrained.any():
            # From the tight mask, as the released code pooled the full-size one: the 16x16 cells of a
            # side divisible by 16 hold exactly the pixels of the full-size cells (any-pooling commutes).
            scaled[constrained] = released_scaled(np.asarray(train.masks["abnormality"])[constrained],
                                                  RELEASED_SCALED_GRID)
        masks["scaled"] = scaled
    return dataclasses.replace(train, masks=masks, _filled={})


def _annotated_periphery(bundle: Bundle) -> Split:
    """The training split with periphery masks only on the positives whose lungs the authors annotated."""
    train = bundle.train
    if RELEASED_PERIPHERY in train.masks:
        return dataclasses.replace(train, masks={**train.masks, "periphery": train.masks[RELEASED_PERIPHERY]},
                                   _filled={})
    if bundle.name == "cxr-p-full":  # CXR-P's pool needs none: all 205 of its positives were annotated
        raise DgxError("the cxr-p-full cache has no periphery masks restricted to the annotated positives; rebuild "
                       "it with `dgx data cache --periphery-ids lung_periphery_annotated_ids.csv` to train "
                       "--profile official --mask periphery")
    return train


__all__ = ["for_profile", "pool_of", "redraw", "released_decoding", "RELEASED_ABNORMALITY", "RELEASED_PERIPHERY"]
