"""The paper's experiments as data (``sweeps/paper/*.yaml``), their GPU cost model, and ``dgx reproduce``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState
from rich.table import Table

from dgx.checks import parse_gpus
from dgx.config import get_settings, sweeps_dir
from dgx.errors import DgxError
from dgx.methods import BASELINE
from dgx.progress import result_console, say
from dgx.report import report as build_report
from dgx.resolve import load_data, resolve_config
from dgx.spec import PACKED_FIELDS, ReproduceRequest  # PACKED_FIELDS: grid points differing only in these can pack
from dgx.storage import open_storage, shown_url
from dgx.sweep.command import execute
from dgx.sweep.launch import WorkerSpec
from dgx.sweep.plan import SweepPlan, study_name
from dgx.throughput import ThroughputTable, load_table

log = logging.getLogger("dgx")

# Training images per epoch of the paper's sources (dgx data prepare siim --splits ...); the official
# profile trains on 80% of the pool (CXR-P: 951 gaze images).
TRAIN_IMAGES = {"cxr-p": 947, "cxr-p-full": 6832}
TRAIN_IMAGES_OFFICIAL = {"cxr-p": 760, "cxr-p-full": 6832}
# The cost model of --dry-run divides training images by the img/s of a measured throughput table
# (dgx/throughput.py; default sweeps/throughput/h200.json, written by bench/gpu_check.py --table).
# Evaluation passes are not counted.
# Pruning: asha saved 62-69% of the search's epochs on decoy-cxr replicas of the paper studies
# (bench/prune_replay.py, README "Pruned searches"); the estimate takes the lower end. Its pick lay up to
# 7.5-9.4 AUROC points from the full grid's, so pruning is not the default.
PRUNED_EPOCHS_SAVED = 0.62
PRUNED_PICK_GAP = "7.5–9.4"
GOAL_GPU_H = 50.0  # issue 16: all four paper tables in <= 50 H200-hours


@dataclass(frozen=True)
class Experiment:
    method: str
    mask: str | None


@dataclass(frozen=True)
class PaperSpec:
    name: str
    description: str
    data: str
    budget: str
    seeds: int
    experiments: tuple[Experiment, ...]
    reports: tuple[dict, ...]  # one table per entry (the spec's `report`: a mapping or a list of them)
    oracle: bool = False  # also train the dataset's oracle (ERM on the shortcut-free source)
    in_all: bool = True  # part of `dgx reproduce all` (the paper's tables); the decoy rehearsal is not
    profile: str = "paper"  # paper | official (dgx/profiles.py)
    select: str = "val"  # which grid point the seeds phase retrains (dgx/selection.py)


def paper_specs() -> dict[str, PaperSpec]:
    """Every spec in ``sweeps/paper/*.yaml``, by file stem."""
    specs = {}
    for path in sorted((sweeps_dir() / "paper").glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text())
            experiments = tuple(Experiment(e["method"], e.get("mask")) for e in raw["experiments"])
            report = raw.get("report") or {}
            reports = tuple(dict(r) for r in (report if isinstance(report, list) else [report]))
            specs[path.stem] = PaperSpec(path.stem, str(raw.get("description", "")), str(raw["data"]),
                                         str(raw.get("budget", "paper")), int(raw["seeds"]), experiments,
                                         reports, bool(raw.get("oracle", False)), bool(raw.get("all", True)),
                                         str(raw.get("profile", "paper")), str(raw.get("select", "val")))
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise DgxError(f"paper spec {path} is malformed ({type(exc).__name__}: {exc}); "
                           "it needs data, seeds and experiments: [{method, mask}]") from None
    return specs


def reproduce(req: ReproduceRequest, echo: Callable[[str], None] = print) -> None:
    """Run the studies behind one of the paper's tables (resuming existing ones), then ``echo`` each table,
    for a checked request (its throughput table, read first, is the cost estimate's: default
    sweeps/throughput/h200.json; its ``pack``: grid points trained as one packed network)."""
    chosen = chosen_specs(req.name)
    table = load_table(req.throughput)  # before any planning: a bad table file fails at once
    url = req.storage or get_settings().default_storage()
    gpu_ids = parse_gpus(req.gpus)
    workers = WorkerSpec(workers=req.workers if req.workers is not None else max(1, len(gpu_ids)), gpus=gpu_ids)
    workers.check(url)  # the workers reproduce would start, checked before it prints its plan
    plans_by_spec, rows = plan_specs(chosen, url, req)
    if req.pruner != "none":  # measured on decoy-cxr replicas: bench/prune_replay.py, README "Pruned searches"
        log.warning(f"--pruner {req.pruner}: the search may pick another configuration than the full grid (up to "
                    "7.5 AUROC points apart in bench/prune_replay.py); the seeds phase is never pruned")
    _print_plan(rows, url, table)
    for line in cost_lines(rows, table, req.pack, scope=req.name):
        echo(line)
    if req.dry_run:
        return
    started = time.perf_counter()
    done: set[str] = set()
    for spec in chosen:
        todo = [p for p in plans_by_spec[spec.name] if p.study not in done]
        bundle = load_data(todo[0].base) if todo and not workers.parallel else None
        names = execute(todo, workers, url, req.device, get_settings(), bundle) if todo else []
        if names is None:
            continue  # queued only
        done.update(p.study for p in todo)
        if req.pruner != "none":
            _print_epochs_saved(todo, url)
        _echo_tables(spec, tuple(p.study for p in plans_by_spec[spec.name]), url, echo)
    say(f"reproduce {req.name} finished in {time.perf_counter() - started:.0f} s ({len(done)} studies in "
        f"{shown_url(url)})")


def chosen_specs(name: str) -> list[PaperSpec]:
    """The specs ``name`` runs: one, or ``all``: the paper's (a one-line error for an unknown name)."""
    specs = paper_specs()
    if not specs:
        raise DgxError(f"{sweeps_dir() / 'paper'} holds no experiment specs (*.yaml); point DGX_SWEEPS_DIR at a "
                       "sweeps/ folder like the repository's (budgets/, grids/, paper/), or unset it")
    if name != "all" and name not in specs:
        raise DgxError(f"unknown paper experiment {name!r}; choose from: {', '.join([*specs, 'all'])}")
    return [s for s in specs.values() if s.in_all] if name == "all" else [specs[name]]


def _echo_tables(spec: PaperSpec, prefixes: tuple[str, ...], url: str, echo: Callable[[str], None]) -> None:
    say(f"[bold]{spec.name}[/]: {spec.description}")
    for report in spec.reports:
        echo(build_report(url, study_prefix=prefixes, phase="seeds", shape=str(report.get("table", "1")),
                          method=report.get("method"), baseline=report.get("baseline"),
                          filters={k: report[k] for k in ("mask",) if k in report}))


def _print_epochs_saved(plans: list, url: str) -> None:
    """Epochs the pruned searches trained, against the full grid's."""
    storage = open_storage(url)
    for plan in plans:
        trials = optuna.load_study(study_name=plan.study, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        used, full = sum(len(t.intermediate_values) for t in trials), plan.n_points * plan.base.num_epochs
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        say(f"  {plan.study}: search trained {used} of {full} epochs ({100 * (1 - used / max(full, 1)):.0f}% "
                      f"saved), {pruned} of {len(trials)} points pruned")


@dataclass(frozen=True)
class StudyCost:
    """One study's training work, for the GPU-hour estimate."""

    spec: str  # the paper table it belongs to
    study: str
    method: str
    points: int  # search grid points
    seeds: int  # seeds-phase trials
    epochs: int
    n_train: int  # training images per epoch
    groups: tuple[int, ...]  # the search's packable groups: sizes of its point sets differing only in lr and wd
    shared: bool  # already counted under an earlier table

    @property
    def trials(self) -> int:
        return self.points + self.seeds

    def gpu_h(self, table: ThroughputTable, *, pruned: bool = False, pack: int = 1) -> float:
        """GPU-hours: the search trained in packs of ``pack`` (the last pack of a group padded to ``pack``, as
        a conservative estimate), with ``PRUNED_EPOCHS_SAVED`` of its epochs saved when ``pruned``; the seeds
        phase one trial at a time and never pruned (its trials differ in seed, which a pack cannot)."""
        images = self.epochs * self.n_train  # per trial
        single = table.single(self.method)
        if pack > 1:
            search = sum(math.ceil(g / pack) for g in self.groups) * pack * images / table.img_s[self.method][pack]
        else:
            search = self.points * images / single
        if pruned:
            search *= 1 - PRUNED_EPOCHS_SAVED
        return (search + self.seeds * images / single) / 3600


def plan_specs(chosen: list[PaperSpec], url: str, req: ReproduceRequest) -> tuple[dict[str, list], list[StudyCost]]:
    """The sweep plans of each spec under ``req``'s overrides, and one cost row per study (a study shared by
    specs is counted once)."""
    rows, plans_by_spec, seen = [], {}, set()
    for spec in chosen:
        plans = []
        for exp in spec.experiments:
            cfg, budget = resolve_config(req.train(exp.method, exp.mask, spec.data, spec.budget, spec.profile))
            rule = req.select or spec.select
            plan = SweepPlan(base=cfg, budget=budget, study=study_name(cfg, budget, select=rule), storage=url,
                             trials=req.trials, seeds=req.seeds or spec.seeds, device=req.device, pruner=req.pruner,
                             pack=req.pack, select=rule)
            oracle = plan.oracle() if spec.oracle and exp.method == BASELINE else None
            for one in [plan] + ([oracle] if oracle is not None else []):
                plans.append(one)
                rows.append(_cost(spec.name, one, one.study in seen))
                seen.add(one.study)
        plans_by_spec[spec.name] = plans
    return plans_by_spec, rows


def _cost(spec: str, plan, shared: bool) -> StudyCost:
    cfg = plan.base
    sizes = TRAIN_IMAGES if cfg.profile == "paper" else TRAIN_IMAGES_OFFICIAL
    n_train = sizes.get(cfg.dataset) or int(dict(cfg.data_options).get("n_train", 384))
    groups: dict[tuple, int] = {}
    for point in plan.budget.points(cfg.method)[:plan.n_points]:
        key = tuple(sorted((k, v) for k, v in point.items() if k not in PACKED_FIELDS))
        groups[key] = groups.get(key, 0) + 1
    return StudyCost(spec, plan.study, cfg.method, plan.n_points, plan.seeds, cfg.num_epochs, n_train,
                     tuple(groups.values()), shared)


def best_pack(rows: list[StudyCost], table: ThroughputTable, method: str, limit: int | None = None) -> int:
    """The measured pack size K (1 = unpacked) that trains ``method``'s searches in ``rows`` in the fewest
    GPU-hours, K at most ``limit`` and at most the largest packable group."""
    mine = [r for r in rows if r.method == method and not r.shared]
    largest = max((g for r in mine for g in r.groups), default=1)
    options = [1] + [k for k in table.packed(method) if k <= largest and (limit is None or k <= limit)]
    return min(options, key=lambda k: (sum(r.gpu_h(table, pack=k) for r in mine), k))


def cost_lines(rows: list[StudyCost], table: ThroughputTable, pack: int = 1, scope: str = "all") -> list[str]:
    """The dry-run's cost summary: the table it read, and the GPU-hours of the full grid, pruned, packed and
    pruned + packed, against the goal (which is for ``all``; ``scope`` names what ``rows`` cover)."""
    unique = [r for r in rows if not r.shared]
    methods = list(dict.fromkeys(r.method for r in unique))
    packs = {m: best_pack(rows, table, m, pack if pack > 1 else None) for m in methods}
    notes = []
    for m in methods:
        measured = table.packed(m)
        if not measured:
            notes.append(f"{m} packing not measured (K=1)")
        elif packs[m] == 1:
            notes.append(f"{m} K=1 (no measured K helps: {', '.join(f'K={k} {v:g}' for k, v in measured.items())})")
        else:
            agg = measured[packs[m]]
            notes.append(f"{m} K={packs[m]} at {agg:g} img/s aggregate ({agg / table.single(m):.1f}x one trial)")

    def total(pruned: bool, packed: bool) -> float:
        return sum(r.gpu_h(table, pruned=pruned, pack=packs[r.method] if packed else 1) for r in unique)

    variants = {"full grid": total(False, False), "pruned": total(True, False), "packed": total(False, True),
                "pruned+packed": total(True, True)}
    best = min(variants, key=variants.get)
    if scope == "all":
        verdict = f"{best} here: {variants[best]:.1f}, {'met' if variants[best] <= GOAL_GPU_H else 'not met'}"
    else:
        verdict = f"this estimate covers {scope} only; {best} here: {variants[best]:.1f}"
    return [
        (f"throughput table {_shown_path(table.path)} ({table.device}, measured {table.measured}, "
         f"batch {table.batch}): one trial {table.summary()} img/s"),
        f"packing (best measured K per method{f', at most --pack {pack}' if pack > 1 else ''}): {'; '.join(notes)}",
        f"GPU-hours for {sum(r.trials for r in unique):,} trials:",
        f"  full grid:      {variants['full grid']:8.1f}",
        (f"  pruned:         {variants['pruned']:8.1f}  (asha saves {PRUNED_EPOCHS_SAVED:.0%} of the search's "
         "epochs, the lower end measured by bench/prune_replay.py; the seeds phase is never pruned; pruning is not "
         f"the default because its measured pick gap was {PRUNED_PICK_GAP} AUROC points)"),
        f"  packed:         {variants['packed']:8.1f}  (the search in packs of K; the seeds phase one trial at a time)",
        f"  pruned+packed:  {variants['pruned+packed']:8.1f}",
        f"goal: <= {GOAL_GPU_H:g} H200-hours for all ({verdict})",
    ]


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder where it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _print_plan(rows: list[StudyCost], url: str, table: ThroughputTable) -> None:
    title = f"dgx reproduce: studies and trials (storage {shown_url(url)}; GPU-hours of the full grid)"
    out = Table(title=title)
    for col in ("table", "study", "grid points", "seeds", "epochs", "trials", "est. GPU-h"):
        out.add_column(col, justify="left" if col in ("table", "study") else "right")
    total_trials, total_h = 0, 0.0
    for r in rows:
        mark = " (shared, counted once)" if r.shared else ""
        gpu_h = r.gpu_h(table)
        out.add_row(r.spec, r.study + mark, str(r.points), str(r.seeds), str(r.epochs), f"{r.trials:,}", f"{gpu_h:.1f}")
        if not r.shared:
            total_trials += r.trials
            total_h += gpu_h
    out.add_row("total", "unique studies", "", "", "", f"{total_trials:,}", f"{total_h:.1f}")
    result_console().print(out)


__all__ = ["Experiment", "PaperSpec", "StudyCost", "paper_specs", "reproduce", "cost_lines", "TRAIN_IMAGES",
           "PRUNED_EPOCHS_SAVED"]
