"""Options shared by the commands (typer annotations only: importing this costs no torch).

A command builds its request (dgx/spec.py) from them and checks it; the library it then calls is
imported inside the command, so `dgx --help` and a mistyped flag cost no torch.
"""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

log = logging.getLogger("dgx")

MethodArg = Annotated[str, typer.Argument(help="Method: erm | actdiff | rrr | gradmask.", show_default=False)]
MaskOpt = Annotated[Optional[str], typer.Option("--mask", help="Attribution mask: abnormality | scaled | periphery | gaze (cxr-p cached with --gaze) | none (erm: none). Default: abnormality.")]
DataOpt = Annotated[str, typer.Option("--data", help="Dataset: decoy-cxr (built-in synthetic) | cxr-p | cxr-p-full (real; needs dgx data prepare + dgx data cache).")]
DataOptsOpt = Annotated[Optional[list[str]], typer.Option("--data-opt", help="Dataset option KEY=VALUE, repeatable (e.g. decoy_strength=0.99).")]
BudgetOpt = Annotated[str, typer.Option("--budget", help="Budget from sweeps/budgets (quick = CPU default, paper = the paper's full setting) or a YAML file.")]
SweepBudgetOpt = Annotated[Optional[str], typer.Option("--budget", help="Budget from sweeps/budgets or a YAML file: quick (the CPU default), gpu (the default where it trains on CUDA: ResNet-50, 128 px), paper (the paper's full setting). Default: gpu on CUDA, else quick.", show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="torchvision classifier, e.g. resnet50 (paper) or resnet18 (CPU). Default: from the budget.")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="imagenet (IMAGENET1K_V1, the paper's) | imagenet:TAG (e.g. imagenet:IMAGENET1K_V2) | none | PATH to a state dict. Default: from the budget.")]
ImageSizeOpt = Annotated[Optional[int], typer.Option("--image-size", min=16, help="Image side in pixels. Default: from the budget.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=0, help="Epochs; 0 = paper's (ERM 15, others 100). Default: from the budget.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=2, help="Training batch size (paper: 16).")]
MethodOptsOpt = Annotated[Optional[list[str]], typer.Option("--method-opt", help="The method's own option KEY=VALUE, repeatable. actdiff: layers=all|last (penalize every hooked layer, the paper's, or only the last).")]
NegativesOpt = Annotated[Optional[str], typer.Option("--negative-masks", help="Mask for images without an annotation (negatives): ones (the paper: no constraint) | lungs | periphery (dgx: constrain them to that anatomy too). Default: from the budget, else ones.")]
SelectOpt = Annotated[str, typer.Option("--select", help="Which grid point the seeds phase retrains, from source data only: val (the paper's: best source-validation AUROC) | shuffled (best AUROC on validation images with their background outside the mask shuffled) | lam-ci (the largest λ within the best point's 95% validation CI). README: Model selection.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", help="paper (the paper's text, corrected where the released code had bugs) | official (exactly as the released code trained: per-seed 80/20 split of the gaze pool, accuracy selection, per-sample batch norm in the penalty, its ActDiff tensors, shuffle, masks, normalization and RRR log). Default: from the budget, else paper. README: Fidelity.")]

