"""``dgx sweep``: a checked request becomes its plans, their storage, their workers and the table.

The method's study, then the ERM baseline's and the oracle's (:func:`dgx.sweep.plan.plans_for`),
run in this process or on workers (:mod:`dgx.sweep.launch`); the seed-averaged table comes from
:func:`dgx.report.report`.
"""

from __future__ import annotations

import time

from dgx.config import get_settings
from dgx.data.base import Bundle
from dgx.data import ORACLES
from dgx.data.released import pool_of
from dgx.profiles import get_profile
from dgx.progress import say
from dgx.report import report as build_report
from dgx.report.load import ORACLE
from dgx.resolve import draws_of, model_then_data, resolve_config
from dgx.runs import OVERRIDDEN
from dgx.spec import SweepRequest, TrainConfig
from dgx.storage import check_storage, open_storage, shown_url
from dgx.sweep.launch import WorkerSpec, launch, parse_gpus
from dgx.sweep.plan import overrides, plans_for
from dgx.sweep.study import check_pack, make_pruner, make_sampler, prepare_sweep, run_sweep


def sweep(req: SweepRequest) -> str | None:
    """Search the grid, retrain the best over seeds (beside the ERM baseline and the oracle) for a checked
    request; the seed-averaged table, or None when the grid was only queued for workers (``workers=0``)."""
    settings = get_settings()
    url = req.storage or settings.default_storage()
    gpu_ids = parse_gpus(req.gpus)
    spec = WorkerSpec(workers=req.workers if req.workers is not None else max(1, len(gpu_ids) * req.trials_per_gpu),
                      gpus=gpu_ids, launcher=req.launcher, partition=req.partition, time_min=req.time_min,
                      trials_per_gpu=req.trials_per_gpu, pack=req.pack)
    spec.check(url)
    check_storage(url)
    cfg, budget = resolve_config(req.train)
    plans = plans_for(req, cfg, budget, url)
    first = plans[0]
    make_sampler(first.sampler, first.grid), make_pruner(first), check_pack(first)  # validate before any work
    started = time.perf_counter()
    bundle = model_then_data(cfg, checked=lambda: open_storage(url))  # fail on model, data or storage first
    say(_header(first.study, budget, cfg, bundle, plans, url, settings, spec, req.budget_note))
    names = execute(plans, spec, url, req.train.device, settings, bundle)
    if names is None:
        return None
    say(f"sweep finished in {time.perf_counter() - started:.0f} s; studies {', '.join(names)} in {shown_url(url)}")
    return build_report(url, study_prefix=tuple(names), phase="seeds")


def _header(name: str, plan_budget, cfg: TrainConfig, bundle: Bundle, plans: list, url: str, settings,
            spec, budget_note: str = "") -> str:
    """What a sweep is about to do, before it starts; ``budget_note``: why this budget, when none was named."""
    plan = plans[0]
    grid = " × ".join(f"{k}{v}" for k, v in plan.grid.items())
    lines = [
        f"[bold]dgx sweep[/] {name}: budget [cyan]{plan_budget.name}[/] ({plan_budget.description})",
        *([f"  budget {plan_budget.name} chosen: {budget_note}"] if budget_note else []),
        f"  model {cfg.model} (weights {cfg.weights}), {bundle.image_size} px, batch {cfg.batch_size}, "
        f"{cfg.num_epochs} epochs, data {cfg.dataset} ({_source_split(cfg, bundle)}, {len(bundle.targets)} targets)",
        f"  profile {cfg.profile}" + (" (the released code's training; README: Fidelity)" if cfg.profile != "paper"
                                     else " (--profile official trains as the released code did)"),
        f"  search {_count(plan.n_points, 'grid point')} of {grid}, then {_count(plan.seeds, 'seed')} of the best",
    ]
    changed = overrides(cfg, plan_budget)
    if changed and OVERRIDDEN.search(name):  # not with --study NAME
        lines.append("  overrides of budget " + plan_budget.name + ": " + ", ".join(f"{k}={v}" for k, v in changed.items())
                     + " (the study's -o suffix; `dgx report` reports it with --study " + name + ")")
    for extra in plans[1:]:
        what = ("oracle: ERM on the source with the shortcut decorrelated (" +
                ", ".join(f"{k}={v}" for k, v in ORACLES.get(cfg.dataset, {}).items()) + "; --no-oracle skips it)"
                if extra.variant == ORACLE else "baseline: ERM (--no-baseline skips it)")
        lines.append(f"  {what}, {_count(extra.n_points, 'grid point')} + {_count(plan.seeds, 'seed')}")
    if plan.pack > 1:
        lines.append(f"  packs of up to {plan.pack} grid points of one λ and seed per training (README: Packed trials)")
    lines.append(f"  storage {shown_url(url)}; W&B mode {settings.resolved_wandb_mode()}")
    if spec.parallel:
        where = f"GPUs {','.join(spec.gpus)}" if spec.gpus else "CPU"
        lines.append(f"  {spec.workers} worker(s) via {spec.launcher} ({where}); more can join with "
                     f"`dgx worker --storage {shown_url(url)}`")
    if plan_budget.name != "paper":
        lines.append("  the paper's full setting is one flag away: --budget paper")
    return "\n".join(lines)


def _source_split(cfg, bundle) -> str:
    if get_profile(cfg.profile).source_split == "redraw":
        return f"pool of {len(pool_of(bundle))} redrawn 80/20 per seed"
    return f"{len(bundle.train)} train / {len(bundle.val)} val"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def execute(plans, spec, url: str, device: str, settings, bundle) -> list[str] | None:
    """Run ``plans`` in this process or on ``spec``'s workers; the study names, or None when only queued.

    ``bundle`` (the first plan's data at its seed) serves the plans on the same data options; a plan on
    other options (the oracle) loads its own, and every seed loads its draw (generated data).
    """
    names: list[str] = []
    if spec.parallel:
        storage_obj = open_storage(url)
        for p in plans:
            prepare_sweep(p, storage_obj)  # enqueue every grid point once, before any worker starts
        if spec.workers == 0:
            studies = " ".join(f"--study {p.study}" for p in plans)
            say(f"queued; start workers with `dgx worker --storage {shown_url(url)} {studies}`, "
                f"then `dgx report --storage {shown_url(url)}`")
            return None
        launch(spec, url, [p.study for p in plans], device, settings.runs_dir)
        for p in plans:
            names += [p.study, f"{p.study}.seeds"]
    else:
        first = plans[0].base
        for p in plans:
            same = (p.base.dataset, p.base.data_options, p.base.seed) == (first.dataset, first.data_options, first.seed)
            names += run_sweep(p, draws_of(p.base, bundle if same else None), settings)
    return names


__all__ = ["sweep", "execute"]
