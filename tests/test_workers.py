"""Distributed sweeps: real worker processes sharing a Journal file or a PostgreSQL server.

Every grid point must train exactly once and be reported once, even when the
queue holds duplicates, a worker is SIGKILLed mid-trial, or one is stopped
with Ctrl-C. Trials are tiny (32 px, resnet18 from scratch, 1-3 epochs) so the
processes spend their time on the queue, not on training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

from dgx.cli import app
from dgx.sweep import queue
from tests.helpers import HANG_S, TINY_DATA, cli_data_args
from tests.test_storage import _postgres_or_skip

GRID_12 = {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "wd": [0.0, 1e-4, 1e-3]}  # ERM: 12 points


def _budget(tmp_path: Path, grid: dict, seeds: int, epochs: int) -> Path:
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    budget = tmp_path / "budget.yaml"
    budget.write_text(yaml.safe_dump({"description": "test", "grid": str(tmp_path / "grid.yaml"), "seeds": seeds,
                                      "train": {"model": "resnet18-w16", "weights": "none", "image_size": 32,
                                                "epochs": epochs}}))
    return budget


def _prepare(tmp_path: Path, url: str, name: str, grid: dict, *, epochs: int, seeds: int = 1,
             n_train: int = 384) -> None:
    """Create a sweep's study and queue in-process (what `dgx sweep` does before starting workers)."""
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest
    from dgx.sweep.plan import SweepPlan
    from dgx.sweep.study import prepare_sweep

    opts = [f"{k}={v}" for k, v in {**TINY_DATA, "n_train": str(n_train)}.items()]
    cfg, budget = resolve_config(TrainRequest(method="erm", mask=None, data="decoy-cxr", data_opts=tuple(opts or ()), budget=str(_budget(tmp_path, grid, seeds, epochs))))
    prepare_sweep(SweepPlan(base=cfg, budget=budget, study=name, storage=url, seeds=seeds))


def _sigint_default() -> None:
    # A test run started in the background (`cmd &` in a script) inherits SIGINT as ignored, and
    # Python then never raises KeyboardInterrupt; a user's terminal delivers it normally.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _dgx(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dgx", *map(str, args)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_sigint_default)


def _load(name: str, url: str) -> optuna.Study:
    from dgx.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url))


def _complete_points(trials) -> list[tuple]:
    return [queue.point_key(t.params) for t in trials if t.state == TrialState.COMPLETE]


def _cleanup(url: str, names: list[str]) -> None:
    if url.startswith("postgresql"):
        for name in names:
            try:
                optuna.delete_study(study_name=name, storage=url)  # postgres URLs are plain Optuna URLs
            except KeyError:
                pass


def _storage(kind: str, tmp_path: Path) -> str:
    return f"journal:///{tmp_path / 'dgx.journal'}" if kind == "journal" else _postgres_or_skip()


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_three_workers_train_each_point_exactly_once(kind, tmp_path):
    """`dgx sweep --workers 3` on a 12-point grid while a racing coordinator enqueues duplicates."""
    url, name = _storage(kind, tmp_path), f"dgx-test-{uuid.uuid4().hex[:8]}"
    budget = _budget(tmp_path, GRID_12, seeds=2, epochs=1)
    args = ["sweep", "erm", "--budget", budget, "--workers", "3", "--storage", url, "--study", name,
            *cli_data_args()]
    try:
        sweep = _dgx(*args, env={"DGX_HEARTBEAT_S": "1", "DGX_GRACE_S": "30"})
        # A second coordinator racing the first: re-enqueue 4 points that are still waiting.
        deadline, dupes = time.time() + HANG_S, 0  # until the sweep is done (then dupes == 4 fails) or hangs
        while time.time() < deadline and sweep.poll() is None and not dupes:
            try:
                study = _load(name, url)
            except KeyError:
                time.sleep(0.2)
                continue
            waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
            if len(waiting) >= 8:
                for t in waiting[-4:]:
                    study.enqueue_trial(dict(t.system_attrs["fixed_params"]))
                dupes = 4
            time.sleep(0.2)
        out, _ = sweep.communicate(timeout=HANG_S)
        assert sweep.returncode == 0, out
        assert dupes == 4
        search = _load(name, url).trials
        points = _complete_points(search)
        assert len(points) == len(set(points)) == 12  # every point trained and reported once
        closed = [t for t in search if "duplicate_of" in t.user_attrs]
        assert len(closed) == 4 and all(t.state == TrialState.FAIL for t in closed)
        assert all(not t.intermediate_values for t in closed)  # closed without training
        workers = {t.user_attrs["worker"] for t in search if t.state == TrialState.COMPLETE}
        seeds = _load(f"{name}.seeds", url).trials
        assert sorted(t.params["seed"] for t in seeds if t.state == TrialState.COMPLETE) == [0, 1]
        runs = list((Path(os.environ["DGX_RUNS_DIR"]) / "runs").glob("*/result.json"))
        # One training per point and per seed, nothing twice (seed 0 of the best point is its search run).
        assert len(runs) == 12 + 1
        print(json.dumps({"storage": kind, "points": len(points), "duplicates_enqueued": dupes,
                          "duplicates_closed": len(closed), "trainings": len(runs), "workers_used": len(workers)}))
        assert "| 2 |" in out  # the report over both seeds
    finally:
        _cleanup(url, [name, f"{name}.seeds"])


def _wait_for(predicate, timeout: float, what: str, procs=()):
    """Poll ``predicate`` until it holds; fail at once if every one of ``procs`` has exited (the timeout is a
    hang guard, so a worker that crashed must not make the test wait it out)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if procs and all(p.poll() is not None for p in procs):
            raise AssertionError(f"every worker exited before {what}:\n" + "\n".join(p.stdout.read() for p in procs))
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _running_with_epoch(url: str, name: str):
    try:
        study = _load(name, url)
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.intermediate_values and "worker" in t.user_attrs:
            return t
    return None


def test_sigkilled_worker_trial_is_retried_and_resumes(tmp_path):
    """A worker dies mid-trial (SIGKILL): the other reaps it after the grace period and resumes it."""
    url, name = _storage("journal", tmp_path), "kill"
    _prepare(tmp_path, url, name, {"lr": [1e-3, 3e-3], "wd": [0.0]}, epochs=3)
    env = {"DGX_HEARTBEAT_S": "0.5", "DGX_GRACE_S": "4", "OMP_NUM_THREADS": "1"}
    a = _dgx("worker", "--storage", url, "--no-progress", "--threads", "1", env=env)
    b_ = _dgx("worker", "--storage", url, "--no-progress", "--threads", "1", env=env)
    procs = {a.pid: a, b_.pid: b_}
    victim_trial = _wait_for(lambda: _running_with_epoch(url, name), HANG_S, "a trial past its first epoch",
                             procs.values())
    victim_pid = int(victim_trial.user_attrs["worker"].rsplit(":", 1)[1])
    procs[victim_pid].send_signal(signal.SIGKILL)
    procs[victim_pid].wait()
    survivor = next(p for pid, p in procs.items() if pid != victim_pid)
    out, _ = survivor.communicate(timeout=HANG_S)
    assert survivor.returncode == 0, out
    assert "no heartbeat" in out
    search = _load(name, url).trials
    killed = next(t for t in search if t.number == victim_trial.number)
    assert killed.state == TrialState.FAIL and "fail_reason" not in killed.user_attrs
    (retry,) = [t for t in search if t.user_attrs.get("retry_of") == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["resumed_from"] >= 1  # continued from the killed worker's checkpoint
    points = _complete_points(search)
    assert len(points) == len(set(points)) == 2
    print(json.dumps({"killed_trial": killed.number, "killed_at_epoch": max(victim_trial.intermediate_values),
                      "retry_trial": retry.number, "resumed_from": retry.user_attrs["resumed_from"],
                      "points": len(points)}))


@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "rerun the same command to resume"),
                                              (signal.SIGTERM, 143, "its trial is marked for retry")])
def test_ctrl_c_or_sigterm_stops_a_worker_and_a_rerun_resumes(tmp_path, sig, code, said):
    """Ctrl-C, and SIGTERM (what SLURM sends at a job's time limit; before dgx handled it, the trial stayed
    RUNNING until the heartbeat grace ran out), leave the trial retryable at once."""
    url, name = _storage("journal", tmp_path), "ctrlc"
    _prepare(tmp_path, url, name, {"lr": [1e-3], "wd": [0.0]}, epochs=3)
    w = _dgx("worker", "--storage", url, "--study", name, "--no-progress", "--threads", "1")
    _wait_for(lambda: _running_with_epoch(url, name), HANG_S, "a trial past its first epoch", [w])
    w.send_signal(sig)
    out, _ = w.communicate(timeout=HANG_S)
    assert w.returncode == code and said in out, out
    (cut,) = _load(name, url).trials
    assert cut.state == TrialState.FAIL and "fail_reason" not in cut.user_attrs  # retryable, storage consistent
    again = _dgx("worker", "--storage", url, "--study", name, "--no-progress", "--threads", "1")
    out, _ = again.communicate(timeout=HANG_S)
    assert again.returncode == 0, out
    trials = _load(name, url).trials
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == cut.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from"] >= 1


def test_submitit_local_launcher(tmp_path):
    """--launcher local runs the SLURM code path (submitit) with its local executor."""
    url = _storage("journal", tmp_path)
    budget = _budget(tmp_path, {"lr": [1e-3, 3e-3], "wd": [0.0]}, seeds=1, epochs=1)
    result = CliRunner().invoke(app, ["sweep", "erm", "--budget", str(budget), "--workers", "2", "--launcher", "local",
                                      "--storage", url, "--study", "sub", *cli_data_args()])
    assert result.exit_code == 0, result.output
    trials = _load("sub", url).trials
    points = _complete_points(trials)
    assert len(points) == len(set(points)) == 2
    logs = list((Path(os.environ["DGX_RUNS_DIR"]) / "submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # one submitit job per worker


def test_worker_flags_fail_clearly(tmp_path):
    runner = CliRunner()
    for args, needle in (
        (["sweep", "erm", "--workers", "2", "--storage", f"sqlite:///{tmp_path / 'x.db'}"], "is for one process"),
        (["sweep", "erm", "--workers", "3", "--gpus", "0,1", "--storage", f"journal:///{tmp_path / 'j'}"],
         "one GPU per worker"),
        (["sweep", "erm", "--gpus", "a,b", "--storage", f"journal:///{tmp_path / 'j'}"], "device numbers"),
        (["sweep", "erm", "--launcher", "k8s"], "unknown launcher"),
        (["worker", "--storage", f"journal:///{tmp_path / 'j'}", "--study", "nope"], "unknown study 'nope'"),
    ):
        result = runner.invoke(app, args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and needle in lines[0], result.output


def test_queue_deduplicates_and_reaps_in_process(tmp_path):
    """The queue rules on one storage, step by step: owner, duplicate, lost trial, retry."""
    study = optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "q.journal"))), direction="maximize")
    p = {"lr": 0.1}
    assert queue.enqueue_missing(study, [p]) == 1 and queue.enqueue_missing(study, [p]) == 0
    study.enqueue_trial(p)  # a racing coordinator's duplicate
    first, second = queue.claim(study), queue.claim(study)
    assert queue.claim(study) is None
    assert queue.duplicate_of(study, first) is None
    owner = queue.duplicate_of(study, second)
    assert owner is not None and owner.number == first.number
    queue.close_duplicate(study, second, owner)
    # The owner's worker dies: no heartbeat for longer than the grace period.
    study._storage.set_trial_system_attr(first._trial_id, queue.HEARTBEAT_ATTR, time.time() - 100)
    assert queue.reap(study, grace_s=10) == [first.number]
    assert queue.enqueue_missing(study, [p]) == 1
    retry = queue.claim(study)
    assert retry.user_attrs["retry_of"] == first.number and queue.duplicate_of(study, retry) is None
    queue.run_trials(study, [retry], lambda ts: [0.5], heartbeat_s=0.1, final_errors=())
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert queue.enqueue_missing(study, [p]) == 0  # done: nothing to retry


def test_trials_per_gpu_pins_k_workers_to_each_gpu():
    from dgx.sweep.launch import WorkerSpec

    spec = WorkerSpec(workers=6, gpus=("0", "1", "2"), trials_per_gpu=2)
    spec.check("journal:///x")
    assert [spec.device_of(i) for i in range(6)] == ["0", "0", "1", "1", "2", "2"]
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "erm", "--trials-per-gpu", "2", "--storage", "journal:///tmp/x.journal"])
    assert r.exit_code == 2 and "give them with --gpus" in r.stderr


def test_a_half_suggested_trial_still_owns_its_point(tmp_path):
    """A claimed trial's params fill in one suggest at a time; meanwhile it must still own its point
    (found as a flaky 5th duplicate when 3 workers raced on PostgreSQL)."""
    study = optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "q.journal"))))
    point = {"lr": 0.1, "wd": 0.0}
    queue.enqueue_missing(study, [point])
    trial = queue.claim(study)
    trial.suggest_categorical("lr", [0.1])  # "wd" not suggested yet
    assert queue.enqueue_missing(study, [point]) == 0



def test_duplicate_enqueued_after_the_last_claim_is_closed_when_the_work_is_done(tmp_path):
    """A racing coordinator's duplicate can land behind the last owner's claim; the worker that
    finishes the grid closes it instead of leaving it WAITING (found as a flaky 2-of-4 closed
    duplicates with 3 workers on PostgreSQL)."""
    from dgx.sweep.study import Timing, _drain

    study = optuna.create_study(storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "q.journal"))), direction="maximize")
    p, q = {"lr": 0.1}, {"lr": 0.2}
    queue.enqueue_missing(study, [p, q])
    study.enqueue_trial({"lr": 0.3})  # queued, but no grid point of this sweep: not a duplicate

    def objective(trials):
        if trials[0].number == 1:  # the last grid point: nothing but the 0.3 trial is waiting now
            study.enqueue_trial(p)
        return [0.5]

    _drain(study, objective, Timing(heartbeat_s=0.1, grace_s=60, poll_s=0.01), lambda done: None, points=[p, q])
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert states[3] == TrialState.FAIL and study.trials[3].user_attrs["duplicate_of"] == 0
    assert states[2] == TrialState.WAITING  # nothing owns {lr: 0.3} but itself
    assert queue.close_waiting_duplicates(study) == 0  # idempotent
