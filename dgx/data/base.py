"""The in-memory form every dataset is loaded into.

A dataset is one source domain (train/val/test splits) plus any number of
target domains used only for evaluation. Images are uint8 grayscale arrays
(N, H, W); masks are uint8 {0,1} arrays of the same shape, keyed by kind.
An all-ones mask means "no attribution constraint" (negatives, and positives
without an annotation), so every method's penalty is zero for that image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Mask kinds a dataset may provide. "none" is always available (all ones);
# "gaze" only where radiologist gaze was cached (real CXR-P with `dgx data cache --gaze`).
MASK_KINDS = ("abnormality", "scaled", "periphery", "gaze", "none")


@dataclass
class Split:
    """One split of one domain: images, binary labels and attribution masks."""

    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 (N,), 1 = pneumothorax
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> uint8 (N, H, W)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        for kind, m in self.masks.items():
            if m.shape != self.images.shape:
                raise ValueError(f"mask {kind!r} has shape {m.shape}, images have {self.images.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def mask(self, kind: str) -> np.ndarray:
        """The mask array of this kind; "none" is all ones."""
        if kind == "none":
            return np.ones_like(self.images)
        if kind not in self.masks:
            raise KeyError(kind)
        return self.masks[kind]


@dataclass
class Bundle:
    """A source domain with its splits and the OOD target domains."""

    name: str  # dataset name, e.g. "decoy-cxr"
    source: str  # source domain name, e.g. "cxr-p-synth"
    train: Split
    val: Split
    test: Split
    targets: dict[str, Split]  # target domain name -> split (evaluation only)
    fingerprint: str  # content hash of the generating config; part of every run's identity

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])
