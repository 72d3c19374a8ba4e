"""Options shared by ``dgx train`` and ``dgx sweep``, and their validation."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from dgx.config import get_settings
from dgx.data import MASK_KINDS, load_dataset
from dgx.data.base import NEGATIVE_MASKS, Bundle
from dgx.errors import DgxError, unknown_choice
from dgx.methods import METHODS
from dgx.methods.actdiff import LAYER_CHOICES
from dgx.sweep.space import Budget, load_budget
from dgx.train import TrainConfig

log = logging.getLogger("dgx")

MethodArg = Annotated[str, typer.Argument(help="Method: erm | actdiff | rrr | gradmask.", show_default=False)]
MaskOpt = Annotated[Optional[str], typer.Option("--mask", help="Attribution mask: abnormality | scaled | periphery | none (erm: none). Default: abnormality.")]
DataOpt = Annotated[str, typer.Option("--data", help="Dataset: decoy-cxr (built-in synthetic) | cxr-p | cxr-p-full (real; needs dgx data prepare + dgx data cache).")]
DataOptsOpt = Annotated[Optional[list[str]], typer.Option("--data-opt", help="Dataset option KEY=VALUE, repeatable (e.g. decoy_strength=0.99).")]
BudgetOpt = Annotated[str, typer.Option("--budget", help="Budget from sweeps/budgets (quick = CPU default, paper = the paper's full setting) or a YAML file.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="torchvision classifier, e.g. resnet50 (paper) or resnet18 (CPU). Default: from the budget.")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="imagenet (IMAGENET1K_V1, the paper's) | imagenet:TAG (e.g. imagenet:IMAGENET1K_V2) | none | PATH to a state dict. Default: from the budget.")]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", min=16, help="Image side in pixels. Default: from the budget.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=0, help="Epochs; 0 = paper's (ERM 15, others 100). Default: from the budget.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=2, help="Training batch size (paper: 16).")]
LayersOpt = Annotated[str, typer.Option("--actdiff-layers", help="ActDiff: penalize all hooked layers or only the last (all | last).")]
NegativesOpt = Annotated[Optional[str], typer.Option("--negative-masks", help="Mask for images without an annotation (negatives): ones (the paper: no constraint) | lungs | periphery (dgx: constrain them to that anatomy too). Default: from the budget, else ones.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", help="paper (the paper's text, corrected where the released code had bugs) | official (exactly as the released code trained: per-seed 80/20 split of the gaze pool, accuracy selection, per-sample batch norm in the penalty, its ActDiff tensors, shuffle, masks, normalization and RRR log). Default: from the budget, else paper. README: Fidelity.")]


def parse_data_options(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DgxError(f"--data-opt {item!r} must look like KEY=VALUE, e.g. --data-opt decoy_strength=0.99")
        out[key.strip()] = value.strip()
    return tuple(sorted(out.items()))


def check_lam(lam: float | None) -> None:
    if lam is not None and not lam >= 0:
        raise DgxError(f"--lam must be a non-negative number, got {lam}")


def resolve_config(method: str, mask: str | None, data: str, data_opt: list[str] | None, budget_name: str, *,
                   model: str | None, weights: str | None, image_size: int | None, epochs: int | None,
                   batch_size: int, actdiff_layers: str, lr: float | None = None, wd: float | None = None,
                   lam: float | None = None, seed: int = 0,
                   negative_masks: str | None = None, profile: str | None = None) -> tuple[TrainConfig, Budget]:
    """Validate the flags and merge them over the budget into one TrainConfig."""
    if method not in METHODS:
        raise unknown_choice("method", method, METHODS)
    if mask is not None and mask not in MASK_KINDS:
        raise unknown_choice("mask", mask, MASK_KINDS)
    if actdiff_layers not in LAYER_CHOICES:
        raise unknown_choice("--actdiff-layers value", actdiff_layers, LAYER_CHOICES)
    for name, value in (("--lr", lr), ("--wd", wd)):
        if value is not None and not value >= 0:
            raise DgxError(f"{name} must be a non-negative number, got {value}")
    check_lam(lam)
    from dgx.data import DATASETS

    if data not in DATASETS:
        raise unknown_choice("dataset", data, DATASETS)
    budget = load_budget(budget_name)
    from dgx.profiles import get_profile

    profile_name = get_profile(profile or str(budget.train.get("profile", "paper"))).name
    negatives = negative_masks or str(budget.train.get("negative_masks", "ones"))
    if negatives not in NEGATIVE_MASKS:
        raise unknown_choice("--negative-masks value", negatives, NEGATIVE_MASKS)
    if method == "erm":
        if mask not in (None, "none"):
            log.warning("erm uses no mask; ignoring --mask %s", mask)
        mask = "none"
    from dgx.models import resolve_weights

    train = budget.train
    cfg = TrainConfig(
        method=method,
        mask=mask or "abnormality",
        dataset=data,
        data_options=parse_data_options(data_opt),
        image_size=image_size if image_size is not None else train.get("image_size"),
        model=model or train.get("model", "resnet50"),
        weights=resolve_weights(model or train.get("model", "resnet50"), weights or train.get("weights", "imagenet")),
        lr=lr if lr is not None else budget.defaults.get("lr", 1e-4),
        wd=wd if wd is not None else budget.defaults.get("wd", 0.0),
        lam=0.0 if method == "erm" else (lam if lam is not None else budget.default_lam(method)),
        batch_size=batch_size,
        epochs=epochs if epochs is not None else int(train.get("epochs", 0)),
        seed=seed,
        actdiff_layers=actdiff_layers if method == "actdiff" else "all",  # only ActDiff reads it
        negative_masks="ones" if method == "erm" else negatives,  # ERM has no mask to fill
        profile=profile_name,
    )
    return cfg, budget


def load_data(cfg: TrainConfig) -> Bundle:
    settings = get_settings()
    bundle = load_dataset(cfg.dataset, dict(cfg.data_options), cfg.image_size, settings.data_dir)
    if cfg.mask != "none" and cfg.mask not in bundle.train.masks:
        raise unknown_choice(f"mask for dataset {cfg.dataset}", cfg.mask, [*bundle.train.masks, "none"])
    if cfg.negative_masks != "ones" and cfg.mask != "none" and cfg.negative_masks not in bundle.train.anatomy:
        raise DgxError(f"--negative-masks {cfg.negative_masks} needs {cfg.negative_masks} masks for every training "
                       f"image, and dataset {cfg.dataset} has them only for annotated positives; "
                       "use --negative-masks ones (the paper's setting)")
    return bundle
