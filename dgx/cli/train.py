"""``dgx train``: one training run, printed as a per-domain AUROC table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from dgx.cli import common as c
from dgx.progress import result_console


def train(
    method: c.MethodArg,
    mask: c.MaskOpt = None,
    data: c.DataOpt = "decoy-cxr",
    data_opt: c.DataOptsOpt = None,
    budget: c.BudgetOpt = "quick",
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate. Default: from the budget.")] = None,
    wd: Annotated[Optional[float], typer.Option("--wd", help="Adam weight decay. Default: from the budget.")] = None,
    lam: Annotated[Optional[float], typer.Option("--lam", help="Penalty weight λ (>= 0). Default: from the budget.")] = None,
    epochs: c.EpochsOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (init, batch order, shuffles).")] = 0,
    model: c.ModelOpt = None,
    weights: c.WeightsOpt = None,
    image_size: c.ImageSizeOpt = None,
    batch_size: c.BatchOpt = 16,
    method_opt: c.MethodOptsOpt = None,
    negative_masks: c.NegativesOpt = None,
    profile: c.ProfileOpt = None,
    device: c.DeviceOpt = "auto",
    runs_dir: Annotated[Optional[Path], typer.Option("--runs-dir", help="Run folders (checkpoints, results). Default: DGX_RUNS_DIR or ./runs.")] = None,
) -> None:
    """Train one model on the source domain and report AUROC on every domain.

    The checkpoint is chosen on source validation AUROC only. Rerunning the same
    command resumes an interrupted run from its last epoch.
    """
    from dgx.spec import TrainRequest  # the library loads when the command runs (dgx --help stays fast)

    req = TrainRequest(method=method, mask=mask, data=data, data_opts=tuple(data_opt or ()),
                       method_opts=tuple(method_opt or ()), budget=budget, lr=lr, wd=wd, lam=lam, epochs=epochs,
                       seed=seed, model=model, weights=weights, image_size=image_size, batch_size=batch_size,
                       negative_masks=negative_masks, profile=profile, device=device, runs_dir=runs_dir)
    req.check()  # what the flags' text alone can show, before the slow imports and any work
    from dgx.resolve import train_one  # torch

    cfg, bundle, result = train_one(req)
    chosen = (f"val accuracy {result.val_accuracy:.1f}%, AUROC {result.val_auroc:.3f}" if result.selection == "accuracy"
              else f"val AUROC {result.val_auroc:.3f}")
    table = Table(title=f"{cfg.method} ({cfg.mask}, {cfg.profile} profile) — best epoch {result.best_epoch}, {chosen}")
    table.add_column("domain")
    table.add_column("role")
    table.add_column("AUROC", justify="right")
    for domain, value in result.auroc.items():
        table.add_row(domain, "source test" if domain == bundle.source else "target", f"{100 * value:.1f}")
    result_console().print(table)  # stdout: the result, while progress and logs go to stderr
