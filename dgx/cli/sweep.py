"""``dgx sweep``: grid search on source validation, then N seeds of the best, then the table."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Optional

import typer

from dgx.cli import common as c
from dgx.config import get_settings
from dgx.data import ORACLES
from dgx.models import build_model
from dgx.progress import console


def sweep(
    method: c.MethodArg,
    mask: c.MaskOpt = None,
    data: c.DataOpt = "decoy-cxr",
    data_opt: c.DataOptsOpt = None,
    budget: c.BudgetOpt = "quick",
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Cap on grid points searched. Default: the whole grid.")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Seeds for the best configuration (paper: 10). Default: from the budget.")] = None,
    epochs: c.EpochsOpt = None,
    model: c.ModelOpt = None,
    weights: c.WeightsOpt = None,
    image_size: c.ImageSizeOpt = None,
    batch_size: c.BatchOpt = 16,
    actdiff_layers: c.LayersOpt = "all",
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
) -> None:
    """Search the budget's grid (Appendix A for --budget paper), retrain the best over seeds, print the table.

    Every trial is recorded in the Optuna storage and as a W&B run (offline
    unless an API key is set). Rerunning the same command resumes the study.
    """
    from dgx.report import report as build_report
    from dgx.sweep import SweepPlan, open_storage
    from dgx.sweep.launch import WorkerSpec, parse_gpus
    from dgx.sweep.study import make_pruner, make_sampler

    settings = get_settings()
    cfg, plan_budget = c.resolve_config(method, mask, data, data_opt, budget, model=model, weights=weights,
                                        image_size=image_size, epochs=epochs, batch_size=batch_size,
                                        actdiff_layers=actdiff_layers, negative_masks=negative_masks,
                                        profile=profile)
    url = storage or settings.default_storage()
    name = study_name(cfg, plan_budget.name, prefix=study) if study is None else study
    plan = SweepPlan(base=cfg, budget=plan_budget, study=name, storage=url, trials=trials,
                     seeds=seeds or plan_budget.seeds, device=device, sampler=sampler, pruner=pruner)
    make_sampler(sampler, plan.grid), make_pruner(plan)  # validate before any work
    gpu_ids = parse_gpus(gpus)
    spec = WorkerSpec(workers=workers if workers is not None else max(1, len(gpu_ids) * trials_per_gpu), gpus=gpu_ids,
                      launcher=launcher, partition=partition, time_min=time_min, trials_per_gpu=trials_per_gpu)
    spec.check(url)
    plans = [plan]
    if baseline and cfg.method != "erm":
        erm = replace(cfg, method="erm", mask="none", lam=0.0, actdiff_layers="all", negative_masks="ones")
        erm_plan = replace(plan, base=erm, study=study_name(erm, plan_budget.name, prefix=study))
        oracle_plan = erm_plan.oracle() if oracle else None
        plans += [erm_plan] + ([oracle_plan] if oracle_plan else [])
    build_model(cfg.model, cfg.weights)  # fail fast on bad model, weights or storage, before building data
    open_storage(url)
    started = time.perf_counter()
    bundle = c.load_data(cfg)
    grid = " × ".join(f"{k}{v}" for k, v in plan.grid.items())
    lines = [
        f"[bold]dgx sweep[/] {name}: budget [cyan]{plan_budget.name}[/] ({plan_budget.description})",
        f"  model {cfg.model} (weights {cfg.weights}), {bundle.image_size} px, batch {cfg.batch_size}, "
        f"{cfg.num_epochs} epochs, data {cfg.dataset} ({_source_split(cfg, bundle)}, {len(bundle.targets)} targets)",
        f"  profile {cfg.profile}" + (" (the released code's training; README: Fidelity)" if cfg.profile != "paper"
                                     else " (--profile official trains as the released code did)"),
        f"  search {_count(plan.n_points, 'grid point')} of {grid}, then {_count(plan.seeds, 'seed')} of the best",
    ]
    for extra in plans[1:]:
        what = ("oracle: ERM on the source with the shortcut decorrelated (" +
                ", ".join(f"{k}={v}" for k, v in ORACLES.get(cfg.dataset, {}).items()) + "; --no-oracle skips it)"
                if extra.variant == "oracle" else "baseline: ERM (--no-baseline skips it)")
        lines.append(f"  {what}, {_count(extra.n_points, 'grid point')} + {_count(plan.seeds, 'seed')}")
    lines.append(f"  storage {url}; W&B mode {settings.resolved_wandb_mode()}")
    if spec.parallel:
        where = f"GPUs {','.join(spec.gpus)}" if spec.gpus else "CPU"
        lines.append(f"  {spec.workers} worker(s) via {spec.launcher} ({where}); more can join with "
                     f"`dgx worker --storage {url}`")
    if plan_budget.name != "paper":
        lines.append("  the paper's full setting is one flag away: --budget paper")
    console.print("\n".join(lines))
    names = execute(plans, spec, url, device, settings, bundle)
    if names is None:
        return
    console.print(f"sweep finished in {time.perf_counter() - started:.0f} s; studies {', '.join(names)} in {url}")
    typer.echo(build_report(url, study_prefix=tuple(names), phase="seeds"))


def _source_split(cfg, bundle) -> str:
    from dgx.data.profile import pool_of
    from dgx.profiles import get_profile

    if get_profile(cfg.profile).source_split == "redraw":
        return f"pool of {len(pool_of(bundle))} redrawn 80/20 per seed"
    return f"{len(bundle.train)} train / {len(bundle.val)} val"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def execute(plans, spec, url: str, device: str, settings, bundle) -> list[str] | None:
    """Run ``plans`` in this process or on ``spec``'s workers; the study names, or None when only queued.

    ``bundle`` serves every plan with the first plan's data; a plan on other data
    options (the oracle) loads its own.
    """
    from dgx.sweep import open_storage, run_sweep
    from dgx.sweep.launch import launch
    from dgx.sweep.study import prepare_sweep

    names: list[str] = []
    if spec.parallel:
        storage_obj = open_storage(url)
        for p in plans:
            prepare_sweep(p, storage_obj)  # enqueue every grid point once, before any worker starts
        if spec.workers == 0:
            studies = " ".join(f"--study {p.study}" for p in plans)
            console.print(f"queued; start workers with `dgx worker --storage {url} {studies}`, "
                          f"then `dgx report --storage {url}`")
            return None
        launch(spec, url, [p.study for p in plans], device, settings.runs_dir)
        for p in plans:
            names += [p.study, f"{p.study}.seeds"]
    else:
        first = plans[0].base
        for p in plans:
            same = (p.base.dataset, p.base.data_options) == (first.dataset, first.data_options)
            names += run_sweep(p, bundle if same and bundle is not None else c.load_data(p.base), settings)
    return names


def study_name(cfg, budget: str, prefix: str | None = None) -> str:
    """METHOD-MASK-DATA-BUDGET, or PREFIX-METHOD for a baseline next to a named study."""
    if prefix:
        return f"{prefix}-{cfg.method}"
    negatives = "" if cfg.negative_masks == "ones" else f"-neg{cfg.negative_masks}"
    profile = "" if cfg.profile == "paper" else f"-{cfg.profile}"
    return f"{cfg.method}-{cfg.mask}{negatives}-{cfg.dataset}-{budget}{profile}"
