"""``dgx sweep``: an exact grid search on source validation, then the seeds phase.

Search: one Optuna study, GridSampler over the budget's grid (capped by
``trials``), objective = source-validation AUROC. Seeds: the best search
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
from optuna.trial import TrialState

from dgx.config import Settings
from dgx.data.base import Bundle
from dgx.errors import DgxError, unknown_choice
from dgx.progress import make_progress
from dgx.sweep.space import Budget, suggest
from dgx.sweep.storage import open_storage
from dgx.tracking import WandbRun, record_trial
from dgx.train import NonFiniteLossError, TrainConfig, train

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

    @property
    def grid(self) -> dict[str, list[float]]:
        return self.budget.grid_for(self.base.method)

    @property
    def n_points(self) -> int:
        n = len(self.budget.points(self.base.method))
        return min(n, self.trials) if self.trials else n


def run_sweep(plan: SweepPlan, data: Bundle, settings: Settings, progress: bool = True) -> tuple[str, str]:
    """Run (or resume) the search and seeds phases; returns the two study names."""
    storage = open_storage(plan.storage)
    search = _open_study(plan, storage, plan.study, make_sampler(plan.sampler, plan.grid), make_pruner(plan))
    with make_progress() as bar:
        bar.disable = not progress
        total = bar.add_task(f"sweep {plan.study}", total=plan.n_points + plan.seeds, status="")
        objective = _objective(plan, data, settings, "search", plan.grid, bar)
        _run_grid(search, objective, plan, lambda done: bar.update(total, completed=done))

        best = _best_params(search)
        seeds = _seeds_study(plan, storage, best)
        bar.update(total, status=f"best {_fmt(best)}")
        seed_grid = {k: [v] for k, v in best.items()} | {"seed": list(range(plan.seeds))}
        objective = _objective(plan, data, settings, "seeds", seed_grid, bar)
        _run_queue(seeds, objective, best, plan.seeds,
                   lambda done: bar.update(total, completed=plan.n_points + done))
    return search.study_name, seeds.study_name


SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "hyperband")


def make_sampler(name: str, grid: dict[str, list[float]]) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise unknown_choice("sampler", name, SAMPLERS)
    if name == "grid":
        return optuna.samplers.GridSampler(grid, seed=0)
    return optuna.samplers.TPESampler(seed=0) if name == "tpe" else optuna.samplers.RandomSampler(seed=0)


def make_pruner(plan: SweepPlan) -> optuna.pruners.BasePruner:
    if plan.pruner not in PRUNERS:
        raise unknown_choice("pruner", plan.pruner, PRUNERS)
    if plan.pruner == "median":  # compare from epoch 1 once two trials have finished
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if plan.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=plan.base.num_epochs)
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


def _objective(plan: SweepPlan, data: Bundle, settings: Settings, phase: str, grid: dict, bar) -> Callable:
    runs = Path(settings.runs_dir) / "runs"

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, grid)
        cfg = replace(plan.base, **params)
        wandb = WandbRun(settings, cfg, study=trial.study.study_name, phase=phase,
                         name=f"{trial.study.study_name}#{trial.number}")
        if wandb.ref:
            trial.set_user_attr("wandb_run", wandb.ref)

        reported: set[int] = set()

        def on_epoch(epoch: int, stats: dict) -> None:
            wandb.log_epoch(epoch, stats)
            trial.report(stats["val_auroc"], epoch)
            reported.add(epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            result = train(cfg, data, runs / cfg.run_id(), device=plan.device, on_epoch=on_epoch, progress=bar)
        except NonFiniteLossError as exc:
            trial.set_user_attr("fail_reason", str(exc))  # final: a rerun will not retry it
            wandb.finish(None, exit_code=1)
            raise
        except BaseException:
            wandb.finish(None, exit_code=1)
            raise
        for stats in result.history:  # epochs this process did not train (resumed or cached run)
            if stats["epoch"] not in reported:
                trial.report(stats["val_auroc"], stats["epoch"])
        record_trial(trial, cfg, result, phase=phase, source=data.source, targets=list(data.targets),
                     wandb_run=wandb.ref)
        wandb.finish(result)
        return result.val_auroc

    return objective


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def _retryable(t: optuna.trial.FrozenTrial) -> bool:
    """Failed without a recorded reason: interrupted or killed, so worth resuming."""
    return t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs


def _run_grid(study: optuna.Study, objective: Callable, plan: SweepPlan, on_done: Callable[[int], None]) -> None:
    """Run grid points until ``plan.n_points`` distinct points are finished or nothing is left."""
    retried: set[tuple] = set()  # at most one retry per point per invocation
    while True:
        trials = study.get_trials(deepcopy=False)
        finished_trials = [t for t in trials if t.state.is_finished() and not _retryable(t)]
        finished = {_key(t.params) for t in finished_trials}
        # grid: distinct points; tpe/random may revisit a point, so they count trials.
        done = len(finished) if plan.sampler == "grid" else len(finished_trials)
        on_done(min(done, plan.n_points))
        if done >= plan.n_points:
            return
        started = {_key(t.params) for t in trials if t.params}
        waiting = {_key(t.params) for t in trials if t.state == TrialState.WAITING}
        for t in trials:
            k = _key(t.params)
            if _retryable(t) and t.params and k not in finished and k not in waiting and k not in retried:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
                retried.add(k)
                waiting.add(k)
        untouched = [p for p in plan.budget.points(plan.base.method) if _key(p) not in started]
        if plan.sampler == "grid" and not waiting and not untouched:
            return  # every point was tried; the failures are recorded on their trials
        study.optimize(objective, n_trials=1, catch=(NonFiniteLossError,))


def _best_params(study: optuna.Study) -> dict:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise DgxError(f"no search trial of study {study.study_name!r} completed, so there is no best configuration; "
                       "see the failed trials' fail_reason (optuna-dashboard) and rerun")
    best = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    return dict(best.params)


def _seeds_study(plan: SweepPlan, storage, best: dict) -> optuna.Study:
    name = f"{plan.study}.seeds"
    if name in optuna.get_all_study_names(storage):
        old = optuna.load_study(study_name=name, storage=storage)
        if old.user_attrs.get("params") not in (None, best):
            log.warning("best configuration changed (%s → %s): restarting the seeds phase", old.user_attrs["params"], best)
            optuna.delete_study(study_name=name, storage=storage)
    study = _open_study(plan, storage, name, optuna.samplers.RandomSampler(seed=0))
    study.set_user_attr("params", best)
    return study


def _run_queue(study: optuna.Study, objective: Callable, best: dict, n_seeds: int, on_done: Callable[[int], None]) -> None:
    """Enqueue every seed not yet done (or waiting) and run the queue."""
    trials = study.get_trials(deepcopy=False)
    done = {t.params.get("seed") for t in trials if t.state.is_finished() and not _retryable(t)}
    waiting = {t.params.get("seed") for t in trials if t.state == TrialState.WAITING}
    for seed in range(n_seeds):
        if seed not in done and seed not in waiting:
            study.enqueue_trial({**best, "seed": seed})
    while True:
        trials = study.get_trials(deepcopy=False)
        on_done(sum(t.state.is_finished() and not _retryable(t) for t in trials))
        if not any(t.state == TrialState.WAITING for t in trials):
            return
        study.optimize(objective, n_trials=1, catch=(NonFiniteLossError,))


def _fmt(params: dict) -> str:
    return " ".join(f"{k}={v:g}" for k, v in params.items())


__all__ = ["SweepPlan", "run_sweep"]
