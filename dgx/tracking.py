"""Experiment tracking: Optuna trial attributes (the record) and W&B runs (the view).

Privacy: only the training config, per-epoch scalars and per-domain AUROCs are
sent. No images, image IDs or patient IDs ever go to W&B; console capture,
code/git capture and machine metadata are turned off so that file paths and
log lines stay on this machine too.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import optuna

from dgx import __version__
from dgx.config import Settings
from dgx.data import root_draw
from dgx.runs import RESULT, SCORES, TrainResult, TrialRecord, atomic_write_text, load_scores
from dgx.spec import TrainConfig

log = logging.getLogger("dgx")


def record_trial(trial: optuna.Trial, cfg: TrainConfig, result: TrainResult, *, phase: str, source: str,
                 targets: list[str], run_id: str, variant: str = "", wandb_run: str | None = None) -> None:
    """Store everything the report needs on the trial: the storage is the database of record.

    ``variant`` names a data variant of the same dataset (``oracle``: the source with
    its shortcut decorrelated), which the report shows as a row of its own.
    """
    root = root_draw(cfg.dataset, dict(cfg.data_options))
    record = TrialRecord(method=cfg.method, mask=cfg.mask, dataset=cfg.dataset, source=source, targets=list(targets),
                         phase=phase, seed=cfg.seed, auroc=dict(result.auroc), profile=cfg.profile, run_id=run_id,
                         variant=variant, config=cfg.to_dict(), val_auroc=result.val_auroc,
                         best_epoch=result.best_epoch, resumed_from=result.resumed_from, wandb_run=wandb_run,
                         lam=cfg.lam, val_auroc_low=result.val_auroc_low, val_shuffled_auroc=result.val_shuffled_auroc,
                         val_swapped_auroc=result.val_swapped_auroc,
                         draw=None if root is None else root + cfg.seed)
    for key, value in record.to_attrs().items():
        trial.set_user_attr(key, value)


ROC_POINTS = 101  # false-positive rates at which each domain's ROC curve is sent


def roc_points(labels: np.ndarray, scores: np.ndarray, n: int = ROC_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve resampled at ``n`` evenly spaced false-positive rates (no thresholds, no per-image data)."""
    from sklearn.metrics import roc_curve  # scikit-learn: only for the ROC curve of a finished run

    fpr, tpr, _ = roc_curve(labels, scores)
    grid = np.linspace(0.0, 1.0, n)
    return grid, np.interp(grid, fpr, tpr)


# In a run folder, beside result.json: the W&B run that logged its training ({"run", "entity", "project"}).
WANDB_REF = "wandb.json"


def logged_run(run_dir: Path, settings: Settings) -> str | None:
    """The W&B run that already logged the finished training in ``run_dir`` to this entity/project, else None."""
    path = Path(run_dir) / WANDB_REF
    if not (Path(run_dir) / RESULT).exists() or not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or (stored.get("entity", ""), stored.get("project")) != \
            (settings.wandb_entity, settings.wandb_project):
        return None  # logged to another project: not yet in this one
    return str(stored["run"]) if stored.get("run") else None


ANONYMOUS_HOST = "dgx"  # the host name W&B stores instead of this machine's


class WandbRun:
    """One W&B run per training; a no-op when mode is "disabled".

    ``run_dir``: the trial's run folder. A finished training already logged to W&B
    (another trial with the same config, e.g. seed 0 of the seeds phase, which is the
    selected search trial) opens no run: :attr:`ref` is the earlier run's.
    """

    def __init__(self, settings: Settings, cfg: TrainConfig, *, group: str, phase: str, name: str,
                 run_dir: Path | None = None, variant: str = "", extra: dict | None = None) -> None:
        """``group``: the experiment (method, mask, data, budget, profile: the search study's name), shared by
        its search and seeds phases; ``extra``: what the config alone does not say (budget, trial number)."""
        self.run = None
        self.reused: str | None = None
        self.logged: set[int] = set()
        self.where = (settings.wandb_entity, settings.wandb_project)
        mode = self.mode = settings.resolved_wandb_mode()
        if mode == "disabled":
            return
        if run_dir is not None and (reused := logged_run(run_dir, settings)):
            self.reused = reused
            return
        import wandb  # wandb (~1 s): only when W&B is on


        wandb_dir = Path(settings.runs_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        if settings.wandb_api_key:
            os.environ.setdefault("WANDB_API_KEY", settings.wandb_api_key)
        config = {**cfg.to_dict(), **(extra or {}), "variant": variant or "none", "dgx_version": __version__}
        self.run = wandb.init(
            project=settings.wandb_project,
            entity=settings.wandb_entity or None,
            group=group,
            job_type=phase,
            name=name,
            config=config,
            tags=[cfg.method, cfg.mask, cfg.dataset, cfg.profile] + ([variant] if variant else []),
            mode=mode,
            dir=str(wandb_dir),
            reinit="create_new",  # packed members are open at once; each run is its own object (run.log, run.finish)
            settings=wandb.Settings(
                silent=True, console="off", save_code=False, disable_code=True, disable_git=True,
                host=ANONYMOUS_HOST,  # W&B records socket.gethostname() otherwise
                x_save_requirements=False,  # no requirements.txt: the README says machine metadata stays here
                x_disable_meta=True, x_disable_stats=True, x_disable_machine_info=True,
            ),
        )
        self.run.define_metric("epoch")  # the x-axis of every per-epoch chart (restored epochs arrive late)
        for key in ("train/*", "val/*"):
            self.run.define_metric(key, step_metric="epoch")

    @property
    def ref(self) -> str | None:
        """URL when online, else the run id (offline runs are synced later with `wandb sync`)."""
        if self.run is None:
            return self.reused
        return self.run.id if self.mode == "offline" else (self.run.url or self.run.id)

    def log_roc(self, run_dir: Path) -> None:
        """One ROC chart of the selected checkpoint, a line per domain, from the run folder's scores."""
        import wandb  # wandb (~1 s): only when W&B is on

        rows = []
        for domain, (labels, scores) in load_scores(Path(run_dir) / SCORES).items():
            if len(np.unique(labels)) < 2:
                continue
            fpr, tpr = roc_points(labels, scores)
            rows += [[domain, float(f), float(t)] for f, t in zip(fpr, tpr)]
        if rows:
            table = wandb.Table(columns=["domain", "fpr", "tpr"], data=rows)
            self.run.log({"roc": wandb.plot.line(table, "fpr", "tpr", stroke="domain",
                                                 title="ROC of the selected checkpoint")})

    def log_epoch(self, epoch: int, stats: dict) -> None:
        # No step=: epochs restored from a checkpoint are logged after the fact,
        # and W&B steps must increase; charts use the "epoch" field as x-axis.
        if self.run is not None:
            self.run.log({"epoch": epoch, "train/loss": stats["train_loss"], "val/auroc": stats["val_auroc"],
                          "train/lr": stats["lr"]})
            self.logged.add(epoch)

    def finish(self, result: TrainResult | None, exit_code: int = 0, run_dir: Path | None = None,
               source: str | None = None, targets: list[str] | None = None) -> None:
        if self.run is None:
            return
        if result is not None and run_dir is not None:
            self.log_roc(run_dir)
        if result is not None:
            for stats in result.history:  # epochs trained by an earlier, interrupted process
                if stats["epoch"] not in self.logged:
                    self.log_epoch(stats["epoch"], stats)
            self.run.summary["val/auroc"] = result.val_auroc
            self.run.summary["best_epoch"] = result.best_epoch
            for domain, value in result.auroc.items():
                self.run.summary[f"auroc/{domain}"] = value
            shown = [result.auroc[t] for t in targets or [] if t in result.auroc]
            if shown:  # what the tables average: the targets' mean AUROC
                self.run.summary["auroc/target_mean"] = float(np.mean(shown))
            if source is not None:  # what `dgx report --source wandb` needs to rebuild the tables
                self.run.summary["source"] = source
                self.run.summary["targets"] = list(targets or [])
        ref = self.ref
        self.run.finish(exit_code=exit_code)
        self.run = None
        if result is not None and run_dir is not None and ref:  # later trials reusing this training point here
            entity, project = self.where
            atomic_write_text(Path(run_dir) / WANDB_REF, json.dumps({"run": ref, "entity": entity, "project": project}))
