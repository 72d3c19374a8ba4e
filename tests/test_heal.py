"""Self-healing run folders: damage is detected, quarantined and trained again; failed writes leave nothing;
checkpoints load only as plain tensors; `dgx doctor` finds and repairs what a crash left."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

from dgx import runs
from dgx.cli import app
from dgx.errors import DgxError
from dgx.train import train
from tests.helpers import tiny_config, tiny_data
from tests.test_report import add_run

runner = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny run: its config, data, folder and result (copied by each test before damaging it)."""
    root = tmp_path_factory.mktemp("heal")
    cfg = tiny_config(epochs=2)
    data = tiny_data(root, cfg)
    folder = runs.run_dir(root / "runs", cfg.run_id(data.fingerprint))
    result = train(cfg, data, folder, progress=False)
    return {"cfg": cfg, "data": data, "folder": folder, "result": result}


def _copy(finished, tmp_path) -> Path:
    folder = runs.run_dir(tmp_path / "runs", finished["folder"].name)
    shutil.copytree(finished["folder"], folder)
    return folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def _random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def test_a_finished_run_records_its_files():
    assert runs.SEALED == (runs.BEST, runs.SCORES, runs.GROUPS)


DAMAGE = [(runs.RESULT, _truncate), (runs.RESULT, lambda p: p.write_text('{"best_epoch": 1}')),
          (runs.RESULT, _random), (runs.BEST, _truncate), (runs.BEST, _random), (runs.BEST, lambda p: p.unlink()),
          (runs.SCORES, _truncate), (runs.SCORES, _random), (runs.GROUPS, _truncate), (runs.GROUPS, _random)]


def test_every_kind_of_damage_is_detected(finished, tmp_path):
    """Truncated and random-bytes files of each kind (and a missing one) fail verification."""
    for i, (name, damage) in enumerate(DAMAGE):
        folder = runs.run_dir(tmp_path / str(i), finished["folder"].name)
        shutil.copytree(finished["folder"], folder)
        stored = json.loads((folder / runs.RESULT).read_text())
        assert set(stored["files"]) == set(runs.SEALED)  # sizes and hashes recorded at the end of training
        assert runs.verify(folder)[1] == []
        damage(folder / name)
        problems = runs.verify(folder, ("val_auroc", "best_epoch", "auroc"))[1]
        assert problems and (name in problems[0]), (name, problems)


@pytest.mark.parametrize("name,damage", [(runs.RESULT, _truncate), (runs.SCORES, _random)])
def test_damaged_finished_run_is_quarantined_and_trained_again(finished, tmp_path, caplog, name, damage):
    folder = _copy(finished, tmp_path)
    damage(folder / name)
    with caplog.at_level(logging.WARNING, logger="dgx"):
        result = train(finished["cfg"], finished["data"], folder, progress=False)
    (quarantined,) = (tmp_path / "runs" / runs.QUARANTINE).iterdir()
    assert quarantined.name.startswith(folder.name + "-") and (quarantined / runs.RESULT).exists()
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "is damaged" in warning[0] and str(quarantined) in warning[0]
    assert runs.verify(folder)[1] == []  # a whole, sealed folder again
    # Retraining on CPU is deterministic: the same numbers as the first time.
    assert result.auroc == pytest.approx(finished["result"].auroc)


def test_unreadable_last_checkpoint_restarts_the_run(finished, tmp_path, caplog):
    folder = _copy(finished, tmp_path)
    (folder / runs.RESULT).unlink()  # an interrupted run: only checkpoints
    _truncate(folder / runs.LAST)
    with caplog.at_level(logging.WARNING, logger="dgx"):
        result = train(finished["cfg"], finished["data"], folder, progress=False)
    assert "last.pt cannot be resumed" in caplog.text
    assert result.resumed_from == 0 and result.auroc == pytest.approx(finished["result"].auroc)
    assert len(list((tmp_path / "runs" / runs.QUARANTINE).iterdir())) == 1


class _Payload:
    ran: list = []

    def __reduce__(self):
        return (_Payload.ran.append, ("executed",))


def test_a_checkpoint_that_needs_more_than_tensors_is_refused_not_executed(finished, tmp_path, caplog):
    folder = _copy(finished, tmp_path)
    (folder / runs.RESULT).unlink()
    ck = torch.load(folder / runs.LAST, weights_only=True)
    torch.save({**ck, "extra": _Payload()}, folder / runs.LAST)
    with caplog.at_level(logging.WARNING, logger="dgx"):
        train(finished["cfg"], finished["data"], folder, progress=False)
    assert _Payload.ran == [] and "cannot be resumed" in caplog.text


def test_damaged_scores_file_is_one_line_for_readers(tmp_path):
    path = tmp_path / runs.SCORES
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DgxError) as err:
        runs.load_scores(path)
    assert "dgx doctor --fix" in str(err.value) and "\n" not in str(err.value)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["checkpoint", "scores", "text"])
def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch, writer):
    """A full disk mid-write: the error surfaces, the target keeps its old content and no temp file stays."""
    target = tmp_path / {"checkpoint": "last.pt", "scores": "scores.npz", "text": "result.json"}[writer]
    target.write_bytes(b"old")

    def half_then_full(obj, f, *a, **k):  # write some bytes, then the disk is full
        Path(f).write_bytes(b"x" * 1000)
        _enospc()

    if writer == "checkpoint":
        monkeypatch.setattr(torch, "save", half_then_full)
        call = lambda: runs.save_checkpoint({"a": 1}, target)  # noqa: E731
    elif writer == "scores":
        monkeypatch.setattr(np, "savez", lambda f, **arrays: half_then_full(None, f))
        call = lambda: runs.save_scores(target, {"d": (np.zeros(2), np.zeros(2))})  # noqa: E731
    else:
        monkeypatch.setattr(Path, "write_text", lambda self, text, *a, **k: half_then_full(None, self))
        call = lambda: runs.atomic_write_text(target, "{}")  # noqa: E731
    with pytest.raises(OSError) as err:
        call()
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name] and target.read_bytes() == b"old"


def test_enospc_during_training_leaves_a_resumable_folder(finished, tmp_path, monkeypatch):
    cfg = finished["cfg"]
    folder = runs.run_dir(tmp_path / "runs", "fresh")
    real_save, calls = torch.save, []

    def full_on_second(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 3:  # epoch 2's best.pt: the disk fills
            Path(f).write_bytes(b"x" * 100)
            _enospc()
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full_on_second)
    with pytest.raises(OSError):
        train(cfg, finished["data"], folder, progress=False)
    assert not [p for p in folder.iterdir() if ".tmp" in p.name]  # no half-written checkpoint left behind
    monkeypatch.setattr(torch, "save", real_save)
    result = train(cfg, finished["data"], folder, progress=False)  # resumes from epoch 1's last.pt
    assert result.resumed_from == 1


def test_zero_optimizer_steps_is_an_error_not_an_empty_result(tmp_path):
    cfg = tiny_config(batch_size=128)  # 96 training images: drop_last leaves no batch
    data = tiny_data(tmp_path, cfg)
    folder = tmp_path / "runs" / "runs" / "zero"
    with pytest.raises(DgxError, match="no optimizer step would run"):
        train(cfg, data, folder, progress=False)
    assert not (folder / runs.RESULT).exists() and not (folder / runs.LAST).exists()


def test_doctor_finds_and_repairs(finished, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("DGX_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("DGX_DATA_DIR", str(tmp_path.parent / "data"))
    from dgx.config import get_settings

    get_settings.cache_clear()
    good = _copy(finished, tmp_path)  # trial #0's folder, which we damage
    _random(good / runs.SCORES)
    orphan = runs.run_dir(runs_dir, "orphan0000000000")
    shutil.copytree(finished["folder"], orphan)
    os.utime(orphan / runs.RESULT, (1e9, 1e9))  # finished long ago, named by no trial
    (orphan / ".last.pt.123.deadbeef.tmp.pt").write_bytes(b"half")  # a write killed mid-way
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    add_run(study, "erm", "none", 0, finished["result"].auroc, run_id=good.name, config=finished["cfg"].to_dict())
    study.enqueue_trial({"lr": 1e-4})  # the point trial #0 owns: a WAITING duplicate

    result = runner.invoke(app, ["doctor", "--storage", url])
    assert result.exit_code == 1, result.output
    out = result.output
    for kind in ("temporary", "damaged", "orphan", "no-folder", "waiting-duplicate"):
        assert kind in out, out
    assert "rerun with --fix" in out

    fixed = runner.invoke(app, ["doctor", "--storage", url, "--fix"])
    assert fixed.exit_code == 0, fixed.output
    assert "trained again into" in fixed.output and "closed as duplicate" in fixed.output
    assert runs.verify(good)[1] == []  # quarantined, then trained again from the trial's config: whole and sealed
    assert runs.load_scores(good / runs.SCORES)  # readable again
    assert len(list((runs_dir / runs.QUARANTINE).iterdir())) == 2  # the damaged folder and the orphan, kept
    assert optuna.load_study(study_name="s", storage=url).trials[1].user_attrs["duplicate_of"] == 0
    again = runner.invoke(app, ["doctor", "--storage", url])
    assert again.exit_code == 0 and again.output.startswith("ok: nothing to repair"), again.output


def test_doctor_leaves_alone_the_folders_another_storage_names(finished, tmp_path, monkeypatch):
    """The default SQLite file and a Journal share one runs folder: doctor on the Journal must not call the
    SQLite study's folders orphans (before the registry it moved them, and the report lost those methods)."""
    from dgx.config import get_settings
    from dgx.storage import open_storage, remember_storage

    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("DGX_RUNS_DIR", str(runs_dir))
    get_settings.cache_clear()
    folders = {}
    for name in ("theirs0000000000", "nobodys000000000"):
        folders[name] = runs.run_dir(runs_dir, name)
        shutil.copytree(finished["folder"], folders[name])
        os.utime(folders[name] / runs.RESULT, (1e9, 1e9))
    sqlite_url = f"sqlite:///{runs_dir / 'dgx.db'}"  # the default storage, in the runs folder
    add_run(optuna.create_study(study_name="a", storage=sqlite_url, direction="maximize"), "erm", "none", 0,
            finished["result"].auroc, run_id="theirs0000000000", config=finished["cfg"].to_dict())
    journal_url = f"journal://{tmp_path / 'other.journal'}"
    optuna.create_study(study_name="b", storage=open_storage(journal_url), direction="maximize")
    remember_storage(runs_dir, journal_url)  # as its sweep or worker would
    assert f"journal://{(tmp_path / 'other.journal').resolve()}" in (runs_dir / runs.STORAGES).read_text().splitlines()

    result = runner.invoke(app, ["doctor", "--storage", journal_url, "--fix"])
    assert result.exit_code == 0, result.output
    assert "nobodys000000000" in result.output and "theirs0000000000" not in result.output
    assert (folders["theirs0000000000"] / runs.RESULT).exists()  # the SQLite study's folder stays
    assert not folders["nobodys000000000"].exists()  # named by no storage: quarantined

    # A known storage that cannot be read: no folder is called an orphan until it can be.
    shutil.copytree(finished["folder"], folders["nobodys000000000"])
    os.utime(folders["nobodys000000000"] / runs.RESULT, (1e9, 1e9))
    with open(runs_dir / runs.STORAGES, "a") as f:
        f.write("postgresql+psycopg2://nobody@127.0.0.1:1/none\n")
    unread = runner.invoke(app, ["doctor", "--storage", journal_url, "--fix"])
    assert "unreadable-storage" in unread.output and "127.0.0.1:1" in unread.output, unread.output
    assert (folders["nobodys000000000"] / runs.RESULT).exists()
