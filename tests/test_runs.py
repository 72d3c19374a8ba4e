"""dgx/runs.py: atomic writes with the usual permissions, score files, and the trial record."""

from __future__ import annotations

import math
import os
import stat

import numpy as np
import pytest

from dgx.runs import TrialRecord, atomic_folder, atomic_write, atomic_write_text, load_scores, run_dir, save_scores


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_takes_the_umask_permissions(tmp_path, umask022):
    target = tmp_path / "report.md"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello" and mode(target) == 0o644  # not 0600, as secure temporary files are
    with atomic_folder(tmp_path / "cache") as folder:
        (folder / "a.npy").write_bytes(b"x")
    assert mode(tmp_path / "cache") == 0o755 and (tmp_path / "cache" / "a.npy").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "report.md"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "c") as folder:
        (folder / "x").write_text("1")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_scores_round_trip_keeps_the_suffix(tmp_path):
    path = run_dir(tmp_path, "abc") / "scores.npz"
    path.parent.mkdir(parents=True)
    save_scores(path, {"src": (np.array([0, 1]), np.array([0.2, 0.9]))})
    labels, scores = load_scores(path)["src"]
    assert labels.tolist() == [0, 1] and scores.tolist() == pytest.approx([0.2, 0.9])
    assert [p.name for p in path.parent.iterdir()] == ["scores.npz"]


def test_trial_record_round_trips_through_attrs_and_reads_wandb():
    record = TrialRecord(method="rrr", mask="periphery", dataset="decoy-cxr", source="s", targets=["t1", "t2"],
                         phase="seeds", seed=2, auroc={"s": 0.9, "t1": 0.6, "t2": 0.7}, profile="official",
                         run_id="r1", variant="", config={"method": "rrr", "profile": "official"}, val_auroc=0.95,
                         best_epoch=3)
    attrs = record.to_attrs()
    assert TrialRecord.missing(attrs) == [] and "variant" not in attrs
    assert TrialRecord.from_attrs(attrs) == record
    old = {k: v for k, v in attrs.items() if k not in ("profile", "config")}  # a trial from before profiles
    assert TrialRecord.from_attrs(old).profile == "paper"
    assert TrialRecord.missing({"method": "erm"})[:2] == ["mask", "dataset"]
    wb = TrialRecord.from_wandb({"method": "rrr", "mask": "periphery", "dataset": "decoy-cxr", "seed": 2,
                                 "profile": "official"},
                                {"source": "s", "targets": ["t1", "t2"], "auroc/s": 0.9, "auroc/t1": 0.6},
                                "seeds")
    assert wb.domains() == [("s", "source"), ("t1", "target"), ("t2", "target")]
    assert wb.auroc == {"s": 0.9, "t1": 0.6} and wb.profile == "official" and math.isnan(wb.val_auroc)
