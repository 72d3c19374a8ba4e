"""Profiles: the paper's text (``paper``, the default) or the paper's released code (``official``).

dgx's methods equal the released code's penalties in eval mode. Everything
around them, where the released code (github: jparmar32/gaze-robustness,
``train.py``, ``utils.py``, ``dataloader.py``, ``models/extract_activations.py``)
differs from the paper's text or from what dgx does by default, is one field
of :class:`Profile`:

``source_split``
    ``lists``: the dataset's fixed train/val splits (CXR-P: the paper's 947/223
    lists; CXR-P Full: one 80/20 split drawn at ``dgx data prepare``). ``redraw``:
    the released ``utils.py:load_file_markers``: the train+val pool redrawn 80/20
    for every seed with ``StratifiedShuffleSplit(test_size=0.2, random_state=seed)``
    on the pool in its list's own order (the manifest ``<dataset>.pool``): CXR-P's
    951 images with gaze (``trainval_gaze``, ``trainval_list_gold.pkl``), CXR-P
    Full's 8,540 (``trainval_full``, ``new_trainval_all.pkl``).
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
    ``> 0`` (16 is dgx's pick: ``train.py --actdiff_segmask_size`` sets it and no
    released script does); periphery (``actdiff_lungmask``) only on the positives
    whose lungs the authors annotated (``lung_segmentations/annotations``,
    ``first_positive_all_labeled.pkl``: on CXR-P Full 1,206 of 1,902), all ones
    on the others (cache kind ``periphery_released``, built from
    ``lung_periphery_annotated_ids.csv``).
``rrr_log``
    ``log_softmax``: Σ_k log p̂_k, exact. ``log_eps``: the released
    ``log(softmax + 1e-11)``: the penalty's gradient vanishes once the logit gap
    passes about 25. The released behaviour, not a recommendation.
``decode``
    ``stretch``: a DICOM's modality rescale applied, MONOCHROME1 inverted, its
    range stretched to 0–255, then PIL bilinear with ``reducing_gap=2.0``
    (:mod:`dgx.prep.decode`). ``released``: ``dataloader.py:RoboGazeDataset.__getitem__``
    (``np.uint8(ds.pixel_array)``, files as PIL opens them) resized by
    ``utils.py:get_data_transforms``' ``transforms.Resize`` (PIL bilinear, no
    reducing gap); the cache holds both (``images_released``).
``last_batch``
    ``drop``: an epoch's last partial batch is dropped. ``keep``: the released
    ``dataloader.py:fetch_dataloaders`` ``DataLoader(shuffle=True)``, whose
    ``drop_last`` is False: the last batch trains with what is left.
``precision``
    ``bf16``: training and scoring under bfloat16 autocast on CUDA (fp32 on the
    CPU). ``fp32``: fp32 everywhere, as the released ``train.py:train_epoch`` and
    ``train.py:evaluate`` ran (no autocast).
"""

from __future__ import annotations

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
    decode: Literal["stretch", "released"] = "stretch"
    last_batch: Literal["drop", "keep"] = "drop"
    precision: Literal["bf16", "fp32"] = "bf16"


PROFILES: dict[str, Profile] = {
    "paper": Profile("paper"),
    "official": Profile("official", source_split="redraw", select="accuracy", penalty_bn="per_sample",
                        actdiff_tensors="released", shuffle="released", normalization="cxr", masks="released",
                        rrr_log="log_eps", decode="released", last_batch="keep", precision="fp32"),
}

# The scaled-abnormality grid of the official profile (the released code takes it from a flag no released
# script sets; 16 is dgx's pick) and the released validation share.
RELEASED_SCALED_GRID = 16
RELEASED_VAL_FRACTION = 0.2


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_choice("profile", name, PROFILES)
    return PROFILES[name]


__all__ = ["PROFILES", "Profile", "get_profile", "RELEASED_SCALED_GRID", "RELEASED_VAL_FRACTION"]
