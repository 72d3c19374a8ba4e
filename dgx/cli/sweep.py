"""``dgx sweep``: grid search on source validation, then N seeds of the best, then the table."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Optional

import typer

from dgx.cli import common as c


def sweep(
    method: c.MethodArg,
    mask: c.MaskOpt = None,
    data: c.DataOpt = "decoy-cxr",
    data_opt: c.DataOptsOpt = None,
    budget: c.SweepBudgetOpt = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Cap on grid points searched. Default: the whole grid.")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Seeds for the best configuration (paper: 10). Default: from the budget.")] = None,
    epochs: c.EpochsOpt = None,
    model: c.ModelOpt = None,
    weights: c.WeightsOpt = None,
    image_size: c.ImageSizeOpt = None,
    batch_size: c.BatchOpt = 16,
    method_opt: c.MethodOptsOpt = None,
    negative_masks: c.NegativesOpt = None,
    profile: c.ProfileOpt = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL. Default: DGX_STORAGE or sqlite:///runs/dgx.db.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name. Default: METHOD-MASK-DATA-BUDGET.")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="grid (exact grid, the paper's) | tpe | random (over the grid's values).")] = "grid",
    pruner: Annotated[str, typer.Option("--pruner", help="none | median | hyperband | asha (successive halving): stop weak trials early on per-epoch source-val AUROC.")] = "none",
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also sweep ERM with the same budget and data, so the table compares against it.")] = True,
    oracle: Annotated[bool, typer.Option("--oracle/--no-oracle", help="With the baseline, also train the oracle where the dataset has one (decoy-cxr: ERM on the source with the decoy decorrelated), to measure the headroom.")] = True,
    device: c.DeviceOpt = "auto",
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Worker processes (or SLURM jobs) sharing the study. 0: only queue the grid and exit; start `dgx worker` anywhere. Default: one per --gpus entry, else 1 (in this process).")] = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids, one worker pinned to each through CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3.")] = None,
    launcher: Annotated[str, typer.Option("--launcher", help="process (local workers) | slurm (submitit jobs) | local (submitit's local executor, same path as slurm).")] = "process",
    partition: Annotated[str, typer.Option("--partition", help="SLURM partition (--launcher slurm).")] = "",
    time_min: Annotated[int, typer.Option("--time-min", min=1, help="SLURM time limit per worker job, minutes.")] = 24 * 60,
    trials_per_gpu: Annotated[int, typer.Option("--trials-per-gpu", min=1, help="Workers (trials) packed on each --gpus device: batch 16 leaves a large GPU mostly idle.")] = 1,
    pack: Annotated[int, typer.Option("--pack", min=1, help="Train up to this many grid points of one λ and seed (differing in LR and WD) as one wide network (dgx/pack.py). Default: 1, one trial at a time.")] = 1,
    select: c.SelectOpt = "val",
) -> None:
    """Search the budget's grid (Appendix A for --budget paper), retrain the best over seeds, print the table.

    Every trial is recorded in the Optuna storage, and every training once as a
    W&B run (offline unless an API key is set; seed 0 of the seeds phase reuses
    the selected search run). Rerunning the same command resumes the study.
    """
    # the library loads when the command runs (dgx --help stays fast)
    from dgx.spec import SweepRequest, TrainRequest

    train = TrainRequest(method=method, mask=mask, data=data, data_opts=tuple(data_opt or ()),
                         method_opts=tuple(method_opt or ()), budget=budget or "", epochs=epochs, model=model,
                         weights=weights, image_size=image_size, batch_size=batch_size,
                         negative_masks=negative_masks, profile=profile, device=device)
    req = SweepRequest(train=train, trials=trials, seeds=seeds, storage=storage, study=study, sampler=sampler,
                       pruner=pruner, baseline=baseline, oracle=oracle, workers=workers, gpus=gpus, launcher=launcher,
                       partition=partition, time_min=time_min, trials_per_gpu=trials_per_gpu, pack=pack, select=select)
    req.check()  # what the flags' text alone can show, before the slow imports and any work
    if budget is None:  # the default depends on the device (torch is asked only for --device auto)
        name, note = default_budget(budget, device, gpus)  # the header says why
        req = replace(req, train=replace(train, budget=name), budget_note=note)  # quick or gpu: both ship
    from dgx.sweep.command import sweep as run_sweep  # torch, Optuna

    text = run_sweep(req)
    if text is not None:
        typer.echo(text)


CPU_BUDGET, GPU_BUDGET = "quick", "gpu"  # sweeps/budgets/{quick,gpu}.yaml


def default_budget(budget: str | None, device: str = "auto", gpus: str | None = None) -> tuple[str, str]:
    """(the budget a sweep uses, why: "" when it was named): ``budget`` when named; else ``gpu`` where
    the sweep trains on CUDA (``--device cuda[:N]``, ``--gpus``, or ``auto`` with a usable CUDA device),
    else ``quick``. Only ``auto`` without ``--gpus`` imports torch, to ask it."""
    if budget is not None:
        return budget, ""
    if device.startswith("cuda") or gpus:
        where = f"--device {device}" if device.startswith("cuda") else f"--gpus {gpus}"
        return GPU_BUDGET, f"{where} trains on CUDA, no --budget named; --budget {CPU_BUDGET} for the CPU default"
    if device == "auto":
        import torch  # the library loads when the command runs (dgx --help stays fast)

        if torch.cuda.is_available():
            return GPU_BUDGET, f"CUDA available, no --budget named; --budget {CPU_BUDGET} for the CPU default"
    where = "no CUDA device" if device == "auto" else f"--device {device}"
    return CPU_BUDGET, f"{where}, no --budget named; --budget {GPU_BUDGET} for the GPU default"
