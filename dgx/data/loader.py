"""Batches from an in-memory (or memory-mapped) :class:`Split`.

Plain index slicing beats a ``DataLoader`` with workers at this scale: arrays
are already decoded uint8, so a batch is one fancy-index and one ``from_numpy``.
Conversion to float happens on the training device (:func:`dgx.models.to_input`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dgx.data.base import Split

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 images, int64 labels, uint8 masks


def batches(
    split: Split,
    batch_size: int,
    mask_kind: str = "none",
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
    negatives: str = "ones",
) -> Iterator[Batch]:
    """Yield (images (B,1,H,W) uint8, labels (B,), masks (B,1,H,W) uint8).

    With ``shuffle``, the order is a permutation drawn from ``seed`` alone, so a
    resumed run sees exactly the batches an uninterrupted one would have.
    ``negatives`` is what unannotated images are constrained to (see :meth:`Split.mask`).
    """
    n = len(split)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    mask = split.mask(mask_kind, negatives) if mask_kind != "none" else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        images = torch.from_numpy(np.ascontiguousarray(split.images[idx]))[:, None]
        labels = torch.from_numpy(np.asarray(split.labels[idx], dtype=np.int64))
        if mask is None:
            masks = torch.ones_like(images)
        else:
            masks = torch.from_numpy(np.ascontiguousarray(mask[idx]))[:, None]
        yield images, labels, masks


class Resident:
    """A training split's tensors held on one device (the GPU) once; batches are indexed there.

    CXR-P is 947 images of 224² uint8 (~48 MB with a mask), so on a GPU the whole
    split fits many times over, and a batch becomes two ``index_select`` calls
    instead of a host gather and a copy per step. The order is :func:`batches`'
    own (the same permutation from the same seed), so results do not depend on
    which path ran.
    """

    def __init__(self, split: Split, mask_kind: str, negatives: str, device: torch.device | str) -> None:
        self.n = len(split)
        self.images = torch.as_tensor(np.ascontiguousarray(split.images), device=device)[:, None]
        self.labels = torch.as_tensor(np.asarray(split.labels, dtype=np.int64), device=device)
        mask = split.mask(mask_kind, negatives) if mask_kind != "none" else None
        self.masks = None if mask is None else torch.as_tensor(np.ascontiguousarray(mask), device=device)[:, None]

    @staticmethod
    def nbytes(split: Split, mask_kind: str) -> int:
        """Device memory the split takes: images, plus the mask when one is used."""
        return int(np.prod(split.images.shape)) * (1 if mask_kind == "none" else 2) + 8 * len(split)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int | None = None,
                drop_last: bool = False) -> Iterator[Batch]:
        order = np.random.default_rng(seed).permutation(self.n) if shuffle else np.arange(self.n)
        index = torch.as_tensor(order, device=self.images.device)
        stop = self.n - self.n % batch_size if drop_last else self.n
        for start in range(0, stop, batch_size):
            idx = index[start : start + batch_size]
            images = self.images.index_select(0, idx)
            masks = torch.ones_like(images) if self.masks is None else self.masks.index_select(0, idx)
            yield images, self.labels.index_select(0, idx), masks


def num_batches(split: Split, batch_size: int, drop_last: bool = False) -> int:
    n = len(split)
    return n // batch_size if drop_last else -(-n // batch_size)
