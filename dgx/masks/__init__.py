"""Attribution masks: where a model is allowed to look for the label.

Mask kinds (see :data:`dgx.data.base.MASK_KINDS`): the tight ``abnormality``
annotation, its coarse ``scaled`` version, the lung ``periphery`` band, and
``none`` (all ones). Negatives carry all-ones masks for every kind, as in the
paper's reference code: without pathology there is nothing to constrain.
"""

from __future__ import annotations

import numpy as np

from dgx.masks.periphery import band_width_map, equivalent_diameter, periphery_mask, periphery_masks
from dgx.masks.scaled import scaled_mask

__all__ = [
    "all_ones_for_negatives",
    "band_width_map",
    "equivalent_diameter",
    "periphery_mask",
    "periphery_masks",
    "scaled_mask",
]


def all_ones_for_negatives(masks: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Copy of a (N, H, W) mask stack as uint8 {0,1}, with every negative's mask set to ones."""
    masks = np.asarray(masks)
    labels = np.asarray(labels)
    if masks.ndim != 3 or labels.shape != (len(masks),):
        raise ValueError(f"need masks (N, H, W) and labels (N,), got {masks.shape} and {labels.shape}")
    out = (masks != 0).astype(np.uint8)
    out[labels == 0] = 1
    return out
