"""Profiles: the paper's text (``paper``, the default) or the paper's released code (``official``).

dgx's methods equal the released code's penalties in eval mode. Everything
around them, where the released code (github: jparmar32/gaze-robustness,
``train.py``, ``utils.py``, ``dataloader.py``, ``models/extract_activations.py``)
differs from the paper's text or from what dgx does by default, is one field
of :class:`Profile`:

``source_split``
    ``lists``: the dataset's fixed train/val splits (CXR-P: the paper's 947/223
    lists). ``redraw``: the released ``utils.py:load_file_markers``: the
    train+val pool redrawn 80/20 for every seed with
    ``StratifiedShuffleSplit(test_size=0.2, random_state=seed)``. CXR-P's pool
    is then the 951 images with gaze (``trainval_gaze``), CXR-P Full's its 8,540.
``select``
    ``auroc``: the epoch with the best source-validation AUROC, strictly better
    (earlier ties win). ``accuracy``: the released ``train.py:train``: best
    validation accuracy with ``>=`` (later ties win).
``penalty_bn``
    ``batch``: the penalty's forward pass is one batched train-mode pass.
    ``per_sample``: the released ``train.py:train_epoch``: the cross-entropy
    comes from a batched train-mode pass, and every image's penalty from its
    own pass with batch-of-1 statistics (batched here, see
    :mod:`dgx.methods.per_sample`). Running statistics are updated once for the
    batch, then once per image pass, in the released order.
``actdiff_tensors``
    ``pre_activation``: the normalization layers' outputs, read in the hook (the
    paper's text). ``released``: ``models/extract_activations.py``: the tensors
    the hooks stored, read after the forward pass: bn1/bn2 after the in-place
    ReLU, each block's last BN holding the block output after the residual add
    and ReLU, and ``downsample.1`` in place of that block's last BN.
``shuffle``
    ``pixels``: each background pixel moves with all its channels.
    ``released``: ``utils.py:create_masked_image*``: the background values of
    all channels permuted together; on the periphery (lung mask) path the
    generator is reseeded with the run's seed on each call, so an image gets the
    same permutation in every epoch.
``normalization``
    ``imagenet``: per-channel ImageNet mean and std (what the pretrained weights
    expect). ``cxr``: ``utils.py:get_data_transforms``: one mean 0.48865 and std
    0.24621, replicated to 3 channels.
``masks``
    ``dgx``: the abnormality any-pooled to the training size (never loses a thin
    rim, grows it under one cell); scaled = that max-pooled onto the dataset's
    grid and blown back up. ``released``: ``dataloader.py``: the full-resolution
    abnormality resized (anti-aliased, bilinear) to the training size, then
    ``> 0``, which dilates it; scaled = a 16×16 max-pool, bilinear upsampling,
    ``> 0``.
``rrr_log``
    ``log_softmax``: Σ_k log p̂_k, exact. ``log_eps``: the released
    ``log(softmax + 1e-11)``: the penalty's gradient vanishes once the logit gap
    passes about 25. The released behaviour, not a recommendation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from dgx.errors import unknown_choice


@dataclass(frozen=True)
class Profile:
    name: str
    source_split: Literal["lists", "redraw"] = "lists"
    select: Literal["auroc", "accuracy"] = "auroc"
    penalty_bn: Literal["batch", "per_sample"] = "batch"
    actdiff_tensors: Literal["pre_activation", "released"] = "pre_activation"
    shuffle: Literal["pixels", "released"] = "pixels"
    normalization: Literal["imagenet", "cxr"] = "imagenet"
    masks: Literal["dgx", "released"] = "dgx"
    rrr_log: Literal["log_softmax", "log_eps"] = "log_softmax"

    def switches(self) -> dict[str, str]:
        """Every switch and its value (the profile's name excluded)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}


PROFILES: dict[str, Profile] = {
    "paper": Profile("paper"),
    "official": Profile("official", source_split="redraw", select="accuracy", penalty_bn="per_sample",
                        actdiff_tensors="released", shuffle="released", normalization="cxr", masks="released",
                        rrr_log="log_eps"),
}

# The released code's scaled-abnormality grid (the only value its scripts use) and validation share.
RELEASED_SCALED_GRID = 16
RELEASED_VAL_FRACTION = 0.2


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_choice("profile", name, PROFILES)
    return PROFILES[name]


__all__ = ["PROFILES", "Profile", "get_profile", "RELEASED_SCALED_GRID", "RELEASED_VAL_FRACTION"]
