"""W&B logs each distinct training once: a trial that reuses a finished run folder opens no second W&B run."""

from __future__ import annotations

import json

import optuna
from optuna.trial import TrialState
from typer.testing import CliRunner

from dgx.cli import app
from dgx.config import get_settings
from dgx.tracking import WANDB_REF, logged_run
from tests.helpers import cli_data_args, named_study

runner = CliRunner()
STUDY = "erm-none-decoy-cxr-quick"


def sweep(url: str, *extra: str):
    # The quick ERM grid's 1 point, then 2 seeds of it: seed 0 is the search trial's training again.
    return runner.invoke(app, ["sweep", "erm", "--trials", "1", "--seeds", "2", "--epochs", "1", "--no-baseline",
                               "--storage", url, *cli_data_args(), *extra])


def offline_runs(tmp_path) -> list[str]:
    """Ids of the offline W&B runs written under the runs dir (folder offline-run-<time>-<id>)."""
    return sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "runs" / "wandb").glob("offline-run-*"))


def complete(url: str, name: str, suffix: str = "") -> list[optuna.trial.FrozenTrial]:
    return named_study(url, name, suffix).get_trials(states=(TrialState.COMPLETE,))


def test_each_training_is_one_wandb_run_and_every_seed_trial_points_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    get_settings.cache_clear()
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    result = sweep(url)
    assert result.exit_code == 0, result.output

    search, seeds = complete(url, STUDY), complete(url, STUDY, ".seeds")
    assert len(search) == 1 and sorted(t.params["seed"] for t in seeds) == [0, 1]
    folders = sorted(p.name for p in (tmp_path / "runs" / "runs").iterdir() if (p / "result.json").is_file())
    assert sorted({t.user_attrs["run_id"] for t in search + seeds}) == folders
    assert len(folders) == 2  # seed 0 of the seeds phase is a search trial's training
    offline = offline_runs(tmp_path)
    assert len(offline) == len(folders) == len(set(offline))  # one W&B run per training, not per trial
    assert all(t.user_attrs.get("wandb_run") for t in seeds)  # every seeds trial points to its W&B run
    assert sorted({t.user_attrs["wandb_run"] for t in search + seeds}) == offline
    by_folder = {t.user_attrs["run_id"]: t.user_attrs["wandb_run"] for t in search}
    (seed0,) = [t for t in seeds if t.params["seed"] == 0]
    assert seed0.user_attrs["wandb_run"] == by_folder[seed0.user_attrs["run_id"]]  # the selected search run
    files = [p.name for p in (tmp_path / "runs" / "wandb").rglob("*") if p.is_file()]
    assert "requirements.txt" not in files  # x_save_requirements=False

    # A second study over the same configurations trains nothing and logs nothing again.
    again = sweep(url, "--study", "again")
    assert again.exit_code == 0, again.output
    assert offline_runs(tmp_path) == offline
    reused = complete(url, "again") + complete(url, "again", ".seeds")
    assert len(reused) == 3 and all(t.user_attrs["wandb_run"] in offline for t in reused)


def test_a_run_logged_to_another_project_is_not_taken_as_logged(tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "runs" / "abc"
    folder.mkdir(parents=True)
    (folder / WANDB_REF).write_text(json.dumps({"run": "r1", "entity": "", "project": "dgx"}))
    monkeypatch.setenv("WANDB_PROJECT", "dgx")
    get_settings.cache_clear()
    assert logged_run(folder, get_settings()) is None  # no result.json: the training is not finished
    (folder / "result.json").write_text("{}")
    assert logged_run(folder, get_settings()) == "r1"
    monkeypatch.setenv("WANDB_PROJECT", "other")
    get_settings.cache_clear()
    assert logged_run(folder, get_settings()) is None
