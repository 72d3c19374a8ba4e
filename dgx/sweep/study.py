"""``dgx sweep``: an exact grid search on source validation, then the seeds phase.

Search: one Optuna study; every point of the budget's grid (capped by
``trials``) is queued as a fixed-params trial and claimed exactly once by a
worker (:mod:`dgx.sweep.queue`); objective = source-validation AUROC. Seeds: the best search
configuration retrained over N seeds in a companion study ``<name>.seeds``
(trials enqueued with fixed params). Both live in the same storage, the
database of record, and every trial carries the attributes the report reads.

Rerunning the same command resumes: finished grid points are never repeated,
interrupted or killed trials are retried and continue from their last epoch
checkpoint, and the run folders (named by config hash) make already-finished
trainings free.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from dgx.checks import PRUNERS, SAMPLERS  # one list, also checked before any work
from dgx.config import Settings
from dgx.data import Draws
from dgx.data.base import Bundle
from dgx.errors import DgxError, unknown_choice
from dgx.pack import check_model_packable
from dgx.profiles import get_profile
from dgx.progress import make_progress
from dgx.selection import DEFAULT_RULE, Candidate, pick
from dgx.spec import PACKED_FIELDS
from dgx.storage import open_storage
from dgx.sweep import queue
from dgx.sweep.plan import SweepPlan
from dgx.sweep.trial import trial_objective
from dgx.train import NonFiniteLossError

log = logging.getLogger("dgx")
optuna.logging.set_verbosity(optuna.logging.WARNING)

# Identity of a study: the fixed part of the config. lr/wd/lam/seed vary inside it.
_VARYING = ("lr", "wd", "lam", "seed")


@dataclass(frozen=True)
class Timing:
    """Liveness settings of workers (seconds): see :mod:`dgx.sweep.queue`."""

    heartbeat_s: float = 30.0
    grace_s: float = 120.0
    poll_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Timing":
        return cls(heartbeat_s=settings.heartbeat_s, grace_s=settings.grace_s,
                   poll_s=min(2.0, settings.heartbeat_s))


def prepare_sweep(plan: SweepPlan, storage=None) -> optuna.Study:
    """Create (or reopen) the search study, store the plan on it, and enqueue its grid points."""
    storage = storage if storage is not None else open_storage(plan.storage)
    search = _open_study(plan, storage, plan.study, make_sampler(plan.sampler, plan.grid), make_pruner(plan))
    if "plan" not in search.user_attrs:
        search.set_user_attr("plan", plan.to_attrs())
    if plan.sampler == "grid":
        queue.enqueue_missing(search, plan.grid_points())
    return search


def run_sweep(plan: SweepPlan, data: Draws | Bundle, settings: Settings, progress: bool = True) -> tuple[str, str]:
    """Run (or resume) the search and seeds phases in this process; returns the two study names."""
    storage = open_storage(plan.storage)
    search = prepare_sweep(plan, storage)
    return work(plan, search, data, settings, progress=progress)


def work(plan: SweepPlan, search: optuna.Study, data: Draws | Bundle, settings: Settings,
         progress: bool = True, timing: Timing | None = None) -> tuple[str, str]:
    """One worker: take search trials until the search is done, then seeds trials; returns the study names.

    ``data`` gives each seed its data (a Bundle is the data of ``plan.base.seed``; generated data draws
    the others). Any number of workers (processes, machines) may run this on the same storage at once;
    :mod:`dgx.sweep.queue` makes each grid point and each seed train exactly once.
    """
    timing = timing or Timing.from_settings(settings)
    if isinstance(data, Bundle):
        data = Draws(plan.base.dataset, dict(plan.base.data_options), plan.base.image_size, settings.data_dir,
                     {plan.base.seed: data})
    check_pack(plan)
    storage = queue.storage_of(search)
    with make_progress() as bar:
        bar.disable = bar.disable or not progress
        total = bar.add_task(f"sweep {plan.study}", total=plan.n_points + plan.seeds, status="")
        objective = trial_objective(plan, data, settings, "search", plan.grid, bar)
        _drain(search, objective, timing, lambda done: bar.update(total, completed=done),
               points=plan.grid_points() if plan.sampler == "grid" else None, n_points=plan.n_points, pack=plan.pack)

        best = _best_params(search, plan.select)
        seeds = _seeds_study(plan, storage, best)
        bar.update(total, status=f"best {_fmt(best)}")
        seed_grid = {k: [v] for k, v in best.items()} | {"seed": list(range(plan.seeds))}
        objective = trial_objective(plan, data, settings, "seeds", seed_grid, bar)
        _drain(seeds, objective, timing, lambda done: bar.update(total, completed=plan.n_points + done),
               points=[{**best, "seed": seed} for seed in range(plan.seeds)])  # seeds never pack: each its own
    return search.study_name, seeds.study_name




def make_sampler(name: str, grid: dict[str, list[float]]) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise unknown_choice("sampler", name, SAMPLERS)
    if name == "grid":
        # Every grid point is queued as a fixed-params trial (dgx.sweep.queue), so no sampler
        # picks points: GridSampler would repeat points under concurrency and needs its own
        # before_trial hook, which claimed trials bypass. This one is never consulted.
        return optuna.samplers.RandomSampler(seed=0)
    return optuna.samplers.TPESampler(seed=0) if name == "tpe" else optuna.samplers.RandomSampler(seed=0)


def make_pruner(plan: SweepPlan) -> optuna.pruners.BasePruner:
    if plan.pruner not in PRUNERS:
        raise unknown_choice("pruner", plan.pruner, PRUNERS)
    if plan.pruner == "median":  # compare from epoch 1 once two trials have finished
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=plan.base.num_epochs)
    if plan.pruner == "asha":  # successive halving: rungs at 1, 4, 16, ... epochs, top quarter promoted
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=4)
    return optuna.pruners.NopPruner()


def _open_study(plan: SweepPlan, storage, name: str, sampler, pruner=None) -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    fixed = {k: v for k, v in plan.base.to_dict().items() if k not in _VARYING}
    stored = study.user_attrs.get("base_config")
    if stored is None:
        study.set_user_attr("base_config", fixed)
        study.set_user_attr("grid", plan.grid)
    elif stored != fixed:
        diff = ", ".join(f"{k}: {stored.get(k)!r} → {fixed.get(k)!r}" for k in sorted(set(stored) | set(fixed))
                         if stored.get(k) != fixed.get(k))
        raise DgxError(f"study {name!r} already exists with other settings ({diff}); "
                       "pass --study NEW_NAME to start a separate study, or rerun with the original flags")
    return study


def check_pack(plan: SweepPlan) -> None:
    """A one-line DgxError when ``plan.pack`` cannot work (before any training)."""
    if plan.pack < 1:
        raise DgxError(f"--pack must be >= 1, got {plan.pack}")
    if plan.pack == 1:
        return
    if plan.sampler != "grid":
        raise DgxError(f"--pack trains grid points of one λ and seed together; --sampler {plan.sampler} proposes "
                       "them one at a time: use --sampler grid, or --pack 1")
    check_model_packable(plan.base.model, get_profile(plan.base.profile))


def _drain(study: optuna.Study, objective: Callable, timing: Timing, on_done: Callable[[int], None],
           points: list[dict] | None, n_points: int = 0, pack: int = 1) -> None:
    """Run trials of ``study`` until its work is done: every point final (``points``: the grid strategy), or
    ``n_points`` finished trials (``points`` None: the sampler strategy, tpe/random).

    Lost trials (no heartbeat for the grace period) are failed (and, on a grid, their points enqueued
    again); a worker with nothing to claim waits while other workers' trials run, because one may die
    and need a retry. With ``pack`` > 1 on a grid, a claimed trial takes up to ``pack`` − 1 waiting trials
    of its λ and seed with it, and they train as one pack (``objective`` takes the list of trials).
    """
    next_trial = _grid_strategy(study, points) if points is not None else _sampler_strategy(study, n_points)
    waited: set[int] = set()
    while True:
        queue.reap(study, timing.grace_s)
        trials = study.get_trials(deepcopy=False)
        finished, trial = next_trial(trials, on_done)
        if finished:
            return
        if trial is None:  # others are running the rest; wait in case one dies
            _wait_for_others(study, trials, waited, timing)
            continue
        group = [trial]
        if pack > 1 and points is not None:
            group += queue.claim_like(study, trial, pack - 1, _pack_point)
        if points is not None:
            group = [t for t in group if not _closed_as_duplicate(study, t)]
        if group:
            queue.run_trials(study, group, objective, timing.heartbeat_s, final_errors=(NonFiniteLossError,))


def _pack_point(params: dict) -> tuple:
    """Grid points with equal keys can share a pack: they differ only in what a pack's members may."""
    return queue.point_key({k: v for k, v in params.items() if k not in PACKED_FIELDS})


def _closed_as_duplicate(study: optuna.Study, trial: optuna.Trial) -> bool:
    if (owner := queue.duplicate_of(study, trial)) is None:
        return False
    queue.close_duplicate(study, trial, owner)
    return True


def _grid_strategy(study: optuna.Study, points: list[dict]) -> Callable:
    """Each grid point is one fixed-params trial, claimed exactly once; lost or interrupted points are re-enqueued."""

    def next_trial(trials, on_done) -> tuple[bool, optuna.Trial | None]:
        owned = queue.owners(trials)
        done = sum(1 for p in points if (o := owned.get(queue.point_key(p))) is not None and queue.final(o))
        on_done(done)
        if done >= len(points):
            queue.close_waiting_duplicates(study)  # enqueued by a racing coordinator after the last claim
            return True, None
        queue.enqueue_missing(study, points)  # retries of lost or interrupted points
        return False, queue.claim(study)

    return next_trial


def _sampler_strategy(study: optuna.Study, n_points: int) -> Callable:
    """The sampler proposes each trial (``study.ask``) until ``n_points`` have finished or are running."""

    def next_trial(trials, on_done) -> tuple[bool, optuna.Trial | None]:
        done = sum(1 for t in trials if queue.final(t))
        on_done(min(done, n_points))
        if done >= n_points:
            return True, None
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        return False, (study.ask() if done + running < n_points else None)

    return next_trial


def _wait_for_others(study: optuna.Study, trials, waited: set[int], timing: Timing) -> None:
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if running and running[0].number not in waited:
        waited.add(running[0].number)
        log.info("waiting for %d trial(s) of %s running elsewhere (#%d on %s); a silent one is retried "
                 "after %.0f s without heartbeat", len(running), study.study_name, running[0].number,
                 running[0].user_attrs.get("worker", "?"), timing.grace_s)
    time.sleep(timing.poll_s)


def _best_params(study: optuna.Study, rule: str = DEFAULT_RULE) -> dict:
    """The params of the search trial ``rule`` selects (dgx/selection.py), from source validation only."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise DgxError(f"no search trial of study {study.study_name!r} completed, so there is no best configuration; "
                       "see the failed trials' fail_reason (optuna-dashboard) and rerun")
    # Ties: the smaller run id (a hash of the config), never the trial number, which a retry changes.
    candidates = [candidate(t.user_attrs, t.value, f"{t.user_attrs.get('run_id', '')}#{t.number:09d}")
                  for t in complete]
    return dict(complete[pick(candidates, rule)].params)


def candidate(attrs: dict, value: float | None, key: str) -> Candidate:
    """A finished trial as the selection rules see it (``value``: its objective, the validation AUROC)."""
    def number(name: str, default: float = math.nan) -> float:
        x = attrs.get(name)
        return default if x is None else float(x)

    return Candidate(key=key, lam=number("lam", float(dict(attrs.get("config") or {}).get("lam", math.nan))),
                     val=number("val_auroc", math.nan if value is None else float(value)),
                     val_low=number("val_auroc_low"), shuffled=number("val_shuffled_auroc"),
                     swapped=number("val_swapped_auroc"))


def _seeds_study(plan: SweepPlan, storage, best: dict) -> optuna.Study:
    name = f"{plan.study}.seeds"
    if name in optuna.get_all_study_names(storage):
        old = optuna.load_study(study_name=name, storage=storage)
        if old.user_attrs.get("params") not in (None, best):
            log.warning("best configuration changed (%s → %s): restarting the seeds phase", old.user_attrs["params"], best)
            optuna.delete_study(study_name=name, storage=storage)
    study = _open_study(plan, storage, name, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())
    study.set_user_attr("params", best)
    return study


def _fmt(params: dict) -> str:
    return " ".join(f"{k}={v:g}" for k, v in params.items())


__all__ = ["SweepPlan", "Timing", "prepare_sweep", "run_sweep", "work"]
