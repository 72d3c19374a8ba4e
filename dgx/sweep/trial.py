"""One sweep trial's training as the sweep records it: its config and run folder, its W&B run, its
per-epoch reports to Optuna (pruning) and its outcome; and the sweep's objective over the claimed trials
that train together (one, or a pack).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import optuna

from dgx import runs
from dgx.config import Settings
from dgx.data import Draws
from dgx.storage import remember_storage
from dgx.sweep.plan import SweepPlan
from dgx.space import suggest
from dgx.tracking import WandbRun, record_trial
from dgx.train import NonFiniteLossError, train_runs


class TrialRun:
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


def trial_objective(plan: SweepPlan, data: Draws, settings: Settings, phase: str, grid: dict,
                    bar) -> Callable[[list[optuna.Trial]], list[float | BaseException]]:
    """The objective of claimed trials that train together (one, or a pack of grid points that differ only
    in learning rate and weight decay): each trial's value, or the exception that stopped it (pruned,
    non-finite loss) while the others went on."""

    def objective(trials: list[optuna.Trial]) -> list[float | BaseException]:
        members = [TrialRun(plan, data, settings, phase, grid, t) for t in trials]
        if len(trials) > 1:
            for t in trials:
                t.set_user_attr("pack", len(trials))
        try:
            outcomes = train_runs([m.cfg for m in members], members[0].data, [m.run_dir for m in members],
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


__all__ = ["TrialRun", "trial_objective"]
