"""Scoring a model: P(pneumothorax) per image, AUROC and accuracy, and the validation copies the
grid-point selection rules read (dgx/selection.py).

Every split is scored in eval mode, in order: in fp32 on the CPU; on CUDA under bf16 autocast, or in fp32
where the profile says so (``precision``, dgx/profiles.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dgx.data.base import Bundle, Split
from dgx.data.loader import batches
from dgx.models import InputNormalizer
from dgx.profiles import Profile
from dgx.selection import shuffled_background, swapped_background
from dgx.stats import delong_ci

VAL, VAL_SHUFFLED, VAL_SWAPPED = "(val)", "(val, shuffled)", "(val, swapped)"  # never a domain's name


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, device: torch.device, profile: Profile, batch_size: int = 128,
            advance: Callable[[int], None] | None = None) -> np.ndarray:
    """P(pneumothorax) for every image of ``split``, in order, normalized and in the precision of ``profile``:
    (N,), or (N, K) for a packed model. ``advance(n)`` after each batch of n images (a progress bar)."""
    model.eval()
    cuda = device.type == "cuda"
    out = []
    normalize = InputNormalizer(profile.normalization)
    for images, _, _ in batches(split, batch_size):
        x = normalize(images.to(device))
        with autocast(device, profile):
            logits = model(x.contiguous(memory_format=torch.channels_last) if cuda else x)
        out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        if advance is not None:
            advance(len(images))
    return torch.cat(out).numpy()


def autocast(device: torch.device, profile: Profile):
    """bf16 autocast on CUDA unless ``profile.precision`` is fp32; nothing on the CPU."""
    if device.type == "cuda" and profile.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def score(model: torch.nn.Module, splits: dict[str, Split], device: torch.device, profile: Profile, batch_size: int,
          bar=None) -> dict[str, np.ndarray]:
    """:func:`predict` on each split, as one progress task over all their images (tens of thousands on real
    targets: minutes without a word otherwise)."""
    total = sum(len(split.labels) for split in splits.values())
    task = None if bar is None else bar.add_task(f"scoring {total} images ({len(splits)} splits)", total=total,
                                                 status="")
    try:
        return {name: predict(model, split, device, profile, batch_size,
                              None if task is None else lambda n: bar.advance(task, n))
                for name, split in splits.items()}
    finally:
        if task is not None:
            bar.remove_task(task)


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of images whose argmax class is the label (P(pneumothorax) > 0.5), in percent as released."""
    return float(100.0 * np.mean((np.asarray(scores) > 0.5) == (np.asarray(labels) == 1)))


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float("nan") if len(np.unique(labels)) < 2 else float(roc_auc_score(labels, scores))


def selection_splits(data: Bundle, mask: str) -> dict[str, Split]:
    """The source-validation splits the selection rules score a finished run on (dgx/selection.py): the
    validation split, and its shuffled- and swapped-background copies where ``mask`` gives them."""
    out = {VAL: data.val}
    if mask != "none" and mask in data.val.masks:
        for name, copies in ((VAL_SWAPPED, swapped_background), (VAL_SHUFFLED, shuffled_background)):
            if (split := copies(data.val, mask)) is not None:
                out[name] = split
    return out


def selection_numbers(splits: dict[str, Split], scores: dict[str, np.ndarray]) -> dict[str, float]:
    """The selected checkpoint's numbers the grid-point rules read (dgx/selection.py)."""
    out = {}
    val = np.asarray(splits[VAL].labels)
    if len(np.unique(val)) == 2:
        out["val_auroc_low"] = delong_ci(val, scores[VAL])[1]
    for name, key in ((VAL_SHUFFLED, "val_shuffled_auroc"), (VAL_SWAPPED, "val_swapped_auroc")):
        if name in splits:
            out[key] = auroc(np.asarray(splits[name].labels), scores[name])
    return out


__all__ = ["predict", "score", "autocast", "accuracy", "auroc", "selection_splits", "selection_numbers", "VAL", "VAL_SHUFFLED",
           "VAL_SWAPPED"]
