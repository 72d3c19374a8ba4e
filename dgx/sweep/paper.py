"""The paper's experiments as data (``sweeps/paper/*.yaml``), their GPU cost model, and ``dgx reproduce``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from dgx.config import get_settings
from dgx.errors import DgxError
from dgx.methods import BASELINE
from dgx.progress import console
from dgx.sweep.plan import load_data, resolve_config
from dgx.sweep.storage import shown_url

# Training images per epoch of the paper's sources (dgx data prepare siim --splits ...); the official
# profile trains on 80% of the pool (CXR-P: 951 gaze images).
TRAIN_IMAGES = {"cxr-p": 947, "cxr-p-full": 6832}
TRAIN_IMAGES_OFFICIAL = {"cxr-p": 760, "cxr-p-full": 6832}
# Training throughput at batch 16, ResNet-50, 224 px, bf16, measured on an H200 with bench/gpu_check.py
# (img/s): the cost model of --dry-run. Evaluation passes are not counted.
GPU_IMG_S = {"erm": 666.0, "actdiff": 396.0, "rrr": 142.0, "gradmask": 113.0}


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


def paper_specs() -> dict[str, PaperSpec]:
    """Every spec in ``sweeps/paper/*.yaml``, by file stem."""
    import yaml

    from dgx.sweep.space import sweeps_dir

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
                                         str(raw.get("profile", "paper")))
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise DgxError(f"paper spec {path} is malformed ({type(exc).__name__}: {exc}); "
                           "it needs data, seeds and experiments: [{method, mask}]") from None
    return specs


def reproduce(name: str, data: str | None = None, data_opt: list[str] | None = None, budget: str | None = None,
              trials: int | None = None, seeds: int | None = None, epochs: int | None = None,
              model: str | None = None, weights: str | None = None, image_size: int | None = None,
              profile: str | None = None, storage: str | None = None, dry_run: bool = False,
              workers: int | None = None, gpus: str | None = None, device: str = "auto",
              pruner: str = "none", echo: Callable[[str], None] = print) -> None:
    """Run the studies behind one of the paper's tables (resuming existing ones), then ``echo`` each table."""
    from dgx.report import report as build_report
    from dgx.sweep.launch import WorkerSpec, parse_gpus
    from dgx.sweep.plan import execute

    specs = paper_specs()
    if name != "all" and name not in specs:
        raise DgxError(f"unknown paper experiment {name!r}; choose from: {', '.join([*specs, 'all'])}")
    chosen = [s for s in specs.values() if s.in_all] if name == "all" else [specs[name]]
    settings = get_settings()
    url = storage or settings.default_storage()
    overrides = dict(data=data, data_opt=data_opt, budget=budget, trials=trials, seeds=seeds, epochs=epochs,
                     model=model, weights=weights, image_size=image_size, profile=profile, device=device,
                     pruner=pruner)
    plans_by_spec, rows = plan_specs(chosen, url, **overrides)
    if pruner != "none":  # measured on decoy-cxr replicas: bench/prune_replay.py, README "Pruned searches"
        console.print(f"[yellow]--pruner {pruner}: the search may pick another configuration than the full grid "
                      "(up to 7.5 AUROC points apart in bench/prune_replay.py); the seeds phase is never pruned[/]")
    _print_plan(rows, url)
    if dry_run:
        return
    gpu_ids = parse_gpus(gpus)
    wspec = WorkerSpec(workers=workers if workers is not None else max(1, len(gpu_ids)), gpus=gpu_ids)
    wspec.check(url)
    started = time.perf_counter()
    done: set[str] = set()
    for spec in chosen:
        todo = [p for p in plans_by_spec[spec.name] if p.study not in done]
        bundle = load_data(todo[0].base) if todo and not wspec.parallel else None
        names = execute(todo, wspec, url, device, settings, bundle) if todo else []
        if names is None:
            continue  # queued only
        done.update(p.study for p in todo)
        if pruner != "none":
            _print_epochs_saved(todo, url)
        prefixes = tuple(p.study for p in plans_by_spec[spec.name])
        console.print(f"[bold]{spec.name}[/]: {spec.description}")
        for report in spec.reports:
            echo(build_report(url, study_prefix=prefixes, phase="seeds", shape=str(report.get("table", "1")),
                                    method=report.get("method"), baseline=report.get("baseline"),
                                    filters={k: report[k] for k in ("mask",) if k in report}))
    console.print(f"reproduce {name} finished in {time.perf_counter() - started:.0f} s ({len(done)} studies in {shown_url(url)})")


def _print_epochs_saved(plans: list, url: str) -> None:
    """Epochs the pruned searches trained, against the full grid's."""
    import optuna
    from optuna.trial import TrialState

    from dgx.sweep.storage import open_storage

    storage = open_storage(url)
    for plan in plans:
        trials = optuna.load_study(study_name=plan.study, storage=storage).get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        used, full = sum(len(t.intermediate_values) for t in trials), plan.n_points * plan.base.num_epochs
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        console.print(f"  {plan.study}: search trained {used} of {full} epochs ({100 * (1 - used / max(full, 1)):.0f}% "
                      f"saved), {pruned} of {len(trials)} points pruned")


def plan_specs(chosen: list[PaperSpec], url: str, *, data, data_opt, budget, trials, seeds, epochs, model, weights,
               image_size, profile, device, pruner: str = "none") -> tuple[dict[str, list], list[tuple]]:
    """The sweep plans of each spec, and one cost row per study (a study shared by specs is counted once)."""
    from dgx.sweep import SweepPlan
    from dgx.sweep.plan import study_name

    rows, plans_by_spec, seen = [], {}, set()
    for spec in chosen:
        plans = []
        for exp in spec.experiments:
            cfg, plan_budget = resolve_config(exp.method, exp.mask, data or spec.data, data_opt,
                                                budget or spec.budget, model=model, weights=weights,
                                                image_size=image_size, epochs=epochs, batch_size=16,
                                                actdiff_layers="all", profile=profile or spec.profile)
            plan = SweepPlan(base=cfg, budget=plan_budget, study=study_name(cfg, plan_budget.name), storage=url,
                             trials=trials, seeds=seeds or spec.seeds, device=device, pruner=pruner)
            plans.append(plan)
            oracle = plan.oracle() if spec.oracle and exp.method == BASELINE else None
            if oracle is not None:
                plans.append(oracle)
                rows.append((spec.name, oracle.study, oracle.n_points, oracle.seeds, cfg.num_epochs,
                             oracle.n_points + oracle.seeds, 0.0, oracle.study in seen))
                seen.add(oracle.study)
            shared = plan.study in seen
            seen.add(plan.study)
            sizes = TRAIN_IMAGES if cfg.profile == "paper" else TRAIN_IMAGES_OFFICIAL
            n_train = sizes.get(cfg.dataset) or int(dict(cfg.data_options).get("n_train", 384))
            n_trials = plan.n_points + plan.seeds
            gpu_h = n_trials * cfg.num_epochs * n_train / GPU_IMG_S.get(cfg.method, 100.0) / 3600
            rows.append((spec.name, plan.study, plan.n_points, plan.seeds, cfg.num_epochs, n_trials, gpu_h, shared))
        plans_by_spec[spec.name] = plans
    return plans_by_spec, rows


def _print_plan(rows: list[tuple], url: str) -> None:
    from rich.table import Table

    table = Table(title=f"dgx reproduce: studies and trials (storage {shown_url(url)})")
    for col in ("table", "study", "grid points", "seeds", "epochs", "trials", "est. GPU-h"):
        table.add_column(col, justify="left" if col in ("table", "study") else "right")
    total_trials, total_h = 0, 0.0
    for spec, study, points, seeds, epochs, trials, gpu_h, shared in rows:
        mark = " (shared, counted once)" if shared else ""
        table.add_row(spec, study + mark, str(points), str(seeds), str(epochs), f"{trials:,}", f"{gpu_h:.1f}")
        if not shared:
            total_trials += trials
            total_h += gpu_h
    table.add_row("total", "unique studies", "", "", "", f"{total_trials:,}", f"{total_h:.1f}")
    from dgx.progress import result_console

    result_console().print(table)
    console.print(f"{total_trials:,} trials (search grid points + seeds) in all; GPU-hours assume batch-16 training "
                  f"throughput measured on an H200 ({', '.join(f'{k} {v:g}' for k, v in GPU_IMG_S.items())} img/s)")


__all__ = ["Experiment", "PaperSpec", "paper_specs", "reproduce", "GPU_IMG_S", "TRAIN_IMAGES"]
