"""Sweeps survive faults: a diverging trial, and Ctrl-C followed by a rerun."""

from __future__ import annotations

import optuna
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

import dgx.sweep.trial as trial_mod
from dgx.cli import app
from tests.helpers import named_study, cli_data_args

runner = CliRunner()


def sweep_args(url: str, *extra: str) -> list[str]:
    return ["sweep", "rrr", "--mask", "periphery", "--trials", "3", "--seeds", "1", "--epochs", "2",
            "--no-baseline", "--storage", url, *cli_data_args(), *extra]


def test_non_finite_loss_fails_that_trial_and_the_study_continues(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    from dgx.methods.rrr import RRR

    original = RRR.loss

    def loss(self, model, x, y, m):  # λ = 0.3 diverges (injected NaN); λ = 0.1 trains normally
        parts = original(self, model, x, y, m)
        return {**parts, "loss": parts["loss"] * torch.tensor(float("nan"))} if self.lam == 0.3 else parts

    monkeypatch.setattr(RRR, "loss", loss)
    result = runner.invoke(app, sweep_args(url))
    assert result.exit_code == 0, result.output
    trials = named_study(url, "rrr-periphery-decoy-cxr-quick").trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and all(t.params["lam"] == 0.3 for t in failed)
    assert all("non-finite training loss" in t.user_attrs["fail_reason"] for t in failed)
    assert complete and all(t.params["lam"] == 0.1 for t in complete)
    assert len(failed) + len(complete) == 2  # the quick RRR grid's 2 points (under the cap of 3); nothing retried
    assert "RRR (periphery)" in result.output  # the seeds phase ran on the best finite configuration


def test_ctrl_c_then_rerun_resumes_the_interrupted_trial(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    real_train = trial_mod.train_runs
    calls = []

    def interrupted_train(cfgs, data, run_dirs, *, on_epoch=None, **kw):
        def stop_after_first_epoch(i, epoch, stats):
            on_epoch(i, epoch, stats)
            if not calls:
                calls.append(epoch)
                raise KeyboardInterrupt

        return real_train(cfgs, data, run_dirs, on_epoch=stop_after_first_epoch, **kw)

    monkeypatch.setattr(trial_mod, "train_runs", interrupted_train)
    first = runner.invoke(app, sweep_args(url))
    assert first.exit_code == 130 and "rerun the same command to resume" in first.output
    study = named_study(url, "rrr-periphery-decoy-cxr-quick")
    (cut,) = [t for t in study.trials if t.state != TrialState.WAITING]  # the rest of the grid is queued
    assert sum(t.state == TrialState.WAITING for t in study.trials) == 1  # the quick RRR grid has 2 points
    assert cut.state == TrialState.FAIL and "fail_reason" not in cut.user_attrs  # storage left consistent

    monkeypatch.setattr(trial_mod, "train_runs", real_train)
    again = runner.invoke(app, sweep_args(url))
    assert again.exit_code == 0, again.output
    trials = optuna.load_study(study_name=study.study_name, storage=url).trials
    retries = [t for t in trials if t.user_attrs.get("retry_of") == cut.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == cut.params
    assert retries[0].user_attrs["resumed_from"] == 1  # continued from the epoch-1 checkpoint
    points = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(points) == len(set(points)) == 2  # every point of the 2-point grid once
