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
from dataclasses import dataclass, replace

import numpy as np
import optuna
from optuna.trial import TrialState

from dgx import runs
from dgx.checks import PRUNERS, SAMPLERS  # one list, also checked before any work
from dgx.config import Settings
from dgx.data import Draws, oracle_options
from dgx.data.base import Bundle
from dgx.errors import DgxError, unknown_choice
from dgx.progress import make_progress
from dgx.selection import DEFAULT_RULE, Candidate, pick
from dgx.sweep import queue
from dgx.sweep.space import PACKED_FIELDS, Budget, suggest
from dgx.storage import open_storage, remember_storage
from dgx.tracking import WandbRun, record_trial
from dgx.train import NonFiniteLossError, TrainConfig, train, train_packed

log = logging.getLogger("dgx")
optuna.logging.set_verbosity(optuna.logging.WARNING)

# Identity of a study: the fixed part of the config. lr/wd/lam/seed vary inside it.
_VARYING = ("lr", "wd", "lam", "seed")


@dataclass
class SweepPlan:
    base: TrainConfig  # fixed settings; grid params and seed are filled in per trial
    budget: Budget
    study: str  # search study name; seeds go to "<study>.seeds"
    storage: str  # Optuna storage URL
    trials: int | None = None  # cap on grid points (None = whole grid)
    seeds: int = 3  # seeds-phase size
    device: str = "auto"
    sampler: str = "grid"  # grid (exact, the paper's) | tpe | random (over the same grid values)
    pruner: str = "none"  # none | median | hyperband, acting on per-epoch source-val AUROC
    variant: str = ""  # "oracle": ERM on the source with its shortcut decorrelated (a reference row)
    pack: int = 1  # this worker trains up to this many grid points of one λ and seed as one pack (dgx/pack.py)
    select: str = DEFAULT_RULE  # which grid point the seeds phase retrains (dgx/selection.py): val (the paper's) | ...

    @property
    def grid(self) -> dict[str, list[float]]:
        return self.budget.grid_for(self.base.method)

    def oracle(self) -> SweepPlan | None:
        """This plan on the dataset's oracle source (its known shortcut decorrelated from the label),
        as study ``<study>-oracle``; None where the dataset has no oracle."""
        options = oracle_options(self.base.dataset, self.base.data_options)
        if options is None:
            return None
        return replace(self, base=replace(self.base, data_options=options), variant="oracle",
                       study=f"{self.study}-oracle")

    @property
    def n_points(self) -> int:
        n = len(self.budget.points(self.base.method))
        return min(n, self.trials) if self.trials else n


    def to_attrs(self) -> dict:
        """What a ``dgx worker`` needs to rebuild this plan from the study alone."""
        return {"budget": self.budget.name, "grid": self.grid, "seeds": self.seeds, "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner, "variant": self.variant, "select": self.select}

    @classmethod
    def from_study(cls, study: optuna.Study, device: str = "auto") -> "SweepPlan":
        """The plan a sweep stored on its search study (DgxError if it was not made by ``dgx sweep``)."""
        attrs = study.user_attrs
        if "plan" not in attrs or "base_config" not in attrs:
            raise DgxError(f"study {study.study_name!r} was not created by `dgx sweep` (no stored plan); "
                           "start it with `dgx sweep ... --storage URL` first")
        plan, fixed = attrs["plan"], dict(attrs["base_config"])
        fixed["data_options"] = tuple(sorted((str(k), str(v)) for k, v in dict(fixed.get("data_options") or {}).items()))
        base = TrainConfig(**fixed)
        budget = Budget(name=plan["budget"], description="", grid={k: list(v) for k, v in plan["grid"].items()},
                        seeds=int(plan["seeds"]))
        return cls(base=base, budget=budget, study=study.study_name, storage="", trials=plan["trials"],
                   seeds=int(plan["seeds"]), device=device, sampler=plan["sampler"], pruner=plan["pruner"],
                   variant=str(plan.get("variant", "")), select=str(plan.get("select", DEFAULT_RULE)))

    def grid_points(self) -> list[dict]:
        """The points this sweep searches: the grid in a seeded shuffled order, capped at ``trials``.

        Shuffling (seed 0) spreads a capped search over the grid instead of
        taking its lexicographically first corner; the order never changes, so
        a rerun with the same cap asks for the same points.
        """
        points = self.budget.points(self.base.method)
        order = np.random.default_rng(0).permutation(len(points))
        return [points[i] for i in order[: self.n_points]]


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
        objective = _objective(plan, data, settings, "search", plan.grid, bar)
        packed = _packed_objective(plan, data, settings, "search", plan.grid, bar) if plan.pack > 1 else None
        _drain(search, objective, plan, timing, lambda done: bar.update(total, completed=done),
               points=plan.grid_points() if plan.sampler == "grid" else None, packed=packed)

        best = _best_params(search, plan.select)
        seeds = _seeds_study(plan, storage, best)
        bar.update(total, status=f"best {_fmt(best)}")
        seed_grid = {k: [v] for k, v in best.items()} | {"seed": list(range(plan.seeds))}
        objective = _objective(plan, data, settings, "seeds", seed_grid, bar)
        _drain(seeds, objective, plan, timing, lambda done: bar.update(total, completed=plan.n_points + done),
               points=[{**best, "seed": seed} for seed in range(plan.seeds)])
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


class _TrialRun:
    """One trial's training as the sweep records it: its config and run folder, W&B run, reports and outcome."""

    def __init__(self, plan: SweepPlan, draws: Draws, settings: Settings, phase: str, grid: dict,
                 trial: optuna.Trial) -> None:
        self.plan, self.phase, self.trial = plan, phase, trial
        self.cfg = replace(plan.base, **suggest(trial, grid))
        self.data = data = draws(self.cfg.seed)  # generated data: this seed's own draw
        self.run_dir = runs.run_dir(settings.runs_dir, self.cfg.run_id(data.fingerprint))
        remember_storage(settings.runs_dir, plan.storage)  # `dgx doctor` on another storage leaves these alone
        # One W&B run per training, not per trial: a trial whose run folder is already finished (seed 0
        # of the seeds phase is the selected search trial's training) opens none and carries the earlier
        # run's ref. That run keeps the job type of the phase that trained it (search), so W&B holds
        # seeds 1..N-1 as seeds runs and seed 0 as the selected search run (the best val/auroc, as in
        # _best_params): the Optuna trial is the record of the reuse, and `dgx report --source wandb`
        # counts that search run as seed 0 (wandb_source._reused_seed_zero).
        self.wandb = WandbRun(settings, self.cfg, group=plan.study, phase=phase,
                              name=f"{trial.study.study_name}#{trial.number}", run_dir=self.run_dir,
                              variant=plan.variant, extra={"budget": plan.budget.name, "trial": trial.number,
                                                           "study": trial.study.study_name})
        if self.wandb.ref:
            trial.set_user_attr("wandb_run", self.wandb.ref)
        self.reported: set[int] = set()

    def on_epoch(self, epoch: int, stats: dict) -> None:
        self.wandb.log_epoch(epoch, stats)
        self.trial.report(stats["val_auroc"], epoch)
        self.reported.add(epoch)
        # The seeds phase is never pruned: Optuna's default pruner (MedianPruner) would otherwise
        # stop seeds 5 and up, biasing the tables toward good seeds.
        if self.phase == "search" and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    def failed(self, exc: BaseException | None) -> None:
        if isinstance(exc, NonFiniteLossError):
            self.trial.set_user_attr("fail_reason", str(exc))  # final: a rerun will not retry it
        self.wandb.finish(None, exit_code=1)

    def finished(self, result) -> float:
        data = self.data
        for stats in result.history:  # epochs this process did not train (resumed or cached run)
            if stats["epoch"] not in self.reported:
                self.trial.report(stats["val_auroc"], stats["epoch"])
        record_trial(self.trial, self.cfg, result, phase=self.phase, source=data.source, targets=list(data.targets),
                     run_id=self.run_dir.name, variant=self.plan.variant, wandb_run=self.wandb.ref)
        self.wandb.finish(result, run_dir=self.run_dir, source=data.source, targets=list(data.targets))
        return result.val_auroc


def _objective(plan: SweepPlan, data: Draws, settings: Settings, phase: str, grid: dict, bar) -> Callable:

    def objective(trial: optuna.Trial) -> float:
        run = _TrialRun(plan, data, settings, phase, grid, trial)
        try:
            result = train(run.cfg, run.data, run.run_dir, device=plan.device, on_epoch=run.on_epoch, progress=bar)
        except BaseException as exc:
            run.failed(exc)
            raise
        return run.finished(result)

    return objective


def _packed_objective(plan: SweepPlan, data: Draws, settings: Settings, phase: str, grid: dict, bar) -> Callable:
    """Like :func:`_objective`, for trials that train as one pack: each trial's value, or the exception that
    stopped it (pruned, non-finite loss) while the others went on."""

    def objective(trials: list[optuna.Trial]) -> list[float | BaseException]:
        members = [_TrialRun(plan, data, settings, phase, grid, t) for t in trials]
        for t in trials:
            t.set_user_attr("pack", len(trials))
        try:
            outcomes = train_packed([m.cfg for m in members], members[0].data, [m.run_dir for m in members],
                                    device=plan.device, progress=bar,
                                    on_epoch=lambda i, epoch, stats: members[i].on_epoch(epoch, stats))
        except BaseException as exc:
            for m in members:
                m.failed(exc)
            raise
        out: list[float | BaseException] = []
        for m, outcome in zip(members, outcomes):
            if isinstance(outcome, BaseException):
                m.failed(outcome)
                out.append(outcome)
            else:
                out.append(m.finished(outcome))
        return out

    return objective


def check_pack(plan: SweepPlan) -> None:
    """A one-line DgxError when ``plan.pack`` cannot work (before any training)."""
    if plan.pack < 1:
        raise DgxError(f"--pack must be >= 1, got {plan.pack}")
    if plan.pack == 1:
        return
    if plan.sampler != "grid":
        raise DgxError(f"--pack trains grid points of one λ and seed together; --sampler {plan.sampler} proposes "
                       "them one at a time: use --sampler grid, or --pack 1")
    from dgx.pack import check_model_packable
    from dgx.profiles import get_profile

    check_model_packable(plan.base.model, get_profile(plan.base.profile))


def _drain(study: optuna.Study, objective: Callable, plan: SweepPlan, timing: Timing,
           on_done: Callable[[int], None], points: list[dict] | None, packed: Callable | None = None) -> None:
    """Run trials of ``study`` until its work is done: every point final (``points``: the grid strategy), or
    ``plan.n_points`` finished trials (``points`` None: the sampler strategy, tpe/random).

    Lost trials (no heartbeat for the grace period) are failed (and, on a grid, their points enqueued
    again); a worker with nothing to claim waits while other workers' trials run, because one may die
    and need a retry. With ``packed`` (``plan.pack`` > 1, a grid), a claimed trial takes up to
    ``plan.pack`` − 1 waiting trials of its λ and seed with it, and they train as one pack.
    """
    next_trial = _grid_strategy(study, points) if points is not None else _sampler_strategy(study, plan.n_points)
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
        if packed is not None and points is not None:
            group += queue.claim_like(study, trial, plan.pack - 1, _pack_point)
        if points is not None:
            group = [t for t in group if not _closed_as_duplicate(study, t)]
        if len(group) > 1:
            queue.run_trials(study, group, packed, timing.heartbeat_s, final_errors=(NonFiniteLossError,))
        elif group:
            queue.run_trial(study, group[0], objective, timing.heartbeat_s, final_errors=(NonFiniteLossError,))


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
