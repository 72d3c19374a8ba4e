"""Load and faults, measured and kept as tests.

Three `dgx worker` processes share one storage (PostgreSQL or a Journal file) and train a 12-point grid
(3 epochs each, so every trial has a "mid-epoch" past its first checkpoint). While they run, the test
SIGKILLs a worker in the middle of an epoch, twice, and starts a replacement each time so three keep
running; on PostgreSQL it also terminates every server connection of the workers
(``pg_terminate_backend``) while trials run. Afterwards every grid point must be COMPLETE exactly once,
each killed trial retried (``retry_of``) and resumed from its checkpoint, and the per-point results and
``dgx report --phase search --format csv`` identical to an undisturbed run of the same grid.

Idle pooled connections are replaced transparently (``pool_pre_ping``); a worker whose connection is
terminated inside a transaction exits with Optuna's ``StorageInternalError`` (RDBStorage does not retry),
and the test then starts a replacement, records it in ``workers_died``, and still requires all of the above.

The fault moments come from a seeded ``random.Random`` (which running trial is hit, and how far into
its epoch); the workers' own timing still varies from run to run. Each test prints one JSON line with
its wall time, faults, retries and whether the workers survived the connection reset (``pytest -s`` or
``-rP`` shows it).
"""

from __future__ import annotations

import json
import random
import resource
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from dgx.cli import app
from dgx.sweep import queue
from tests.helpers import HANG_S, TINY_DATA
from tests.test_workers import GRID_12, _budget, _cleanup, _dgx, _storage

EPOCHS = 3
MODEL = "resnet18-w16"  # a fifth of resnet18's step time: a trial is ~1 s of one core
N_TRAIN = 384
FAULT_SEED = 20240611
WORKERS = 3
# Heartbeat and grace as in test_workers: a killed worker's trial is reaped 4 s after its last beat.
ENV = {"DGX_HEARTBEAT_S": "0.5", "DGX_GRACE_S": "4", "OMP_NUM_THREADS": "1"}
# Per wait, a hang guard only: an idle 2-core machine needs ~30 s, one loaded by other jobs several times that
# (300 s could be reached at load 8-12).
TIMEOUT_S = HANG_S


def _queue(tmp_path: Path, url: str, name: str):
    """Create the study and queue the grid (what `dgx sweep --workers 0` does); returns the base config."""
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest
    from dgx.sweep.plan import SweepPlan
    from dgx.sweep.study import prepare_sweep

    opts = [f"{k}={v}" for k, v in {**TINY_DATA, "n_train": str(N_TRAIN)}.items()]
    cfg, budget = resolve_config(TrainRequest(method="erm", mask=None, data="decoy-cxr", data_opts=tuple(opts or ()), budget=str(_budget(tmp_path, GRID_12, 1, EPOCHS)), model=MODEL))
    prepare_sweep(SweepPlan(base=cfg, budget=budget, study=name, storage=url, seeds=1))
    return cfg


class _Study:
    """One storage object for the test's many reads (a Journal file is then read incrementally)."""

    def __init__(self, url: str, name: str):
        from dgx.storage import open_storage

        self.url, self.name, self.storage = url, name, open_storage(url)

    def trials(self) -> list[FrozenTrial]:
        return optuna.load_study(study_name=self.name, storage=self.storage).get_trials(deepcopy=False)

    def seeds(self) -> list[FrozenTrial]:
        return optuna.load_study(study_name=f"{self.name}.seeds", storage=self.storage).get_trials(deepcopy=False)


class _Workers:
    """The sweep's worker processes: start, SIGKILL, replace, and supervise them until all have exited.

    A worker that exits non-zero without being killed by the test is a failure, unless ``may_restart``
    is set (after the PostgreSQL connection reset): then it is recorded in ``died`` and replaced.
    """

    def __init__(self, url: str, name: str, env: dict):
        self.url, self.name, self.env = url, name, env
        self.procs: dict = {}
        self.killed: set[int] = set()
        self.outputs: dict[int, str] = {}
        self.died: list[dict] = []
        self.may_restart = False

    def start(self, n: int = 1) -> None:
        for _ in range(n):
            p = _dgx("worker", "--storage", self.url, "--study", self.name, "--no-progress", "--threads", "1",
                     env=self.env)
            self.procs[p.pid] = p

    def live(self) -> set[int]:
        return {pid for pid, p in self.procs.items() if p.poll() is None}

    def kill(self, pid: int) -> None:
        self.procs[pid].send_signal(signal.SIGKILL)
        self.procs[pid].wait()
        self.killed.add(pid)
        self.start(1)  # three keep running

    def check(self) -> None:
        for pid, p in list(self.procs.items()):
            if p.poll() is None or pid in self.outputs:
                continue
            self.outputs[pid] = p.stdout.read()
            if pid in self.killed or p.returncode == 0:
                continue
            if not self.may_restart:
                raise AssertionError(f"worker {pid} exited with code {p.returncode}:\n{self.outputs[pid]}")
            last = [ln for ln in self.outputs[pid].strip().splitlines() if ln.strip()]
            self.died.append({"pid": pid, "code": p.returncode, "last_line": last[-1].strip() if last else ""})
            self.start(1)

    def wait_all(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while self.live():
            self.check()
            if time.time() > deadline:
                raise AssertionError(f"workers still running after {timeout:.0f} s: {sorted(self.live())}")
            time.sleep(0.2)
        self.check()

    def stop(self) -> None:
        for pid in self.live():
            self.procs[pid].kill()
            self.procs[pid].wait()

    def output(self) -> str:
        return "\n".join(f"--- worker {pid}\n{out}" for pid, out in self.outputs.items())


def _children_cpu() -> float:
    """CPU seconds used by this process's finished children (the workers): wall time on a busy machine
    says little, this says what the run costs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pid(t: FrozenTrial) -> int | None:
    worker = t.user_attrs.get("worker")
    return int(worker.rsplit(":", 1)[1]) if worker else None


def _mid_epoch(study: _Study, workers: _Workers) -> list[FrozenTrial]:
    """RUNNING trials of live workers past their first epoch and before their last: training one now."""
    live = workers.live()
    return [t for t in study.trials() if t.state == TrialState.RUNNING and _pid(t) in live
            and 1 <= len(t.intermediate_values) < EPOCHS]


def _next_fault(study: _Study, workers: _Workers, rng: random.Random) -> tuple[FrozenTrial, float]:
    """After a random pause, wait for a trial in mid-epoch, pick one at random, and wait a random part of an
    epoch; returns the trial (re-read: still running the same epoch) and that last delay."""
    time.sleep(rng.uniform(0.0, 1.0))
    deadline = time.time() + TIMEOUT_S
    while time.time() < deadline:
        workers.check()
        candidates = sorted(_mid_epoch(study, workers), key=lambda t: t.number)
        if not candidates:
            if not workers.live():
                raise AssertionError("the sweep ended before the next fault could be injected\n" + workers.output())
            time.sleep(0.1)
            continue
        target, delay = rng.choice(candidates), rng.uniform(0.1, 0.5)
        time.sleep(delay)
        now = study.trials()[target.number]
        if now.state == TrialState.RUNNING and len(now.intermediate_values) == len(target.intermediate_values) \
                and _pid(now) in workers.live():
            return now, delay
    raise AssertionError(f"no trial in mid-epoch within {TIMEOUT_S} s\n{workers.output()}")


def _sigkill(study: _Study, workers: _Workers, rng: random.Random, t0: float) -> dict:
    trial, delay = _next_fault(study, workers, rng)
    pid = _pid(trial)
    workers.kill(pid)
    return {"fault": "sigkill", "at_s": round(time.time() - t0, 1), "pid": pid, "trial": trial.number,
            "in_epoch": len(trial.intermediate_values) + 1, "delay_s": round(delay, 2)}


def _terminate_connections(study: _Study, workers: _Workers, rng: random.Random, app_name: str, t0: float) -> dict:
    """pg_terminate_backend on every server connection the workers hold (their PGAPPNAME), mid-epoch."""
    import sqlalchemy as sa

    trial, delay = _next_fault(study, workers, rng)
    workers.may_restart = True
    engine = sa.create_engine(study.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT pid, state, pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = :app"),
                {"app": app_name}).all()
            conn.commit()
    finally:
        engine.dispose()
    assert rows and all(r[2] for r in rows), f"no worker connection terminated: {rows}"
    return {"fault": "pg_terminate_backend", "at_s": round(time.time() - t0, 1), "trial": trial.number,
            "in_epoch": len(trial.intermediate_values) + 1, "delay_s": round(delay, 2),
            "connections": len(rows), "states": dict(Counter(str(r[1]) for r in rows))}


def _results(trials: list[FrozenTrial]) -> dict[tuple, dict]:
    """Per grid point, what its COMPLETE trial recorded (everything the report reads, and the curve)."""
    return {queue.point_key(t.params): {"value": t.value, "val_auroc": t.user_attrs["val_auroc"],
                                        "auroc": t.user_attrs["auroc"], "best_epoch": t.user_attrs["best_epoch"],
                                        "curve": dict(t.intermediate_values)}
            for t in trials if t.state == TrialState.COMPLETE}


def _report(url: str, name: str) -> str:
    result = CliRunner().invoke(app, ["report", "--storage", url, "--study", name, "--phase", "search",
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    return result.stdout


def _undisturbed(root: Path) -> dict:
    """The same grid, undisturbed, with the same workers (3, one thread each), on a Journal file.

    Its data folder (generated here, once) is shared by the fault runs; its runs folder is not, or the
    fault runs would only reuse its finished trainings.
    """
    from dgx.data import load_dataset

    url, name = f"journal:///{root / 'ref.journal'}", "reference"
    cfg = _queue(root, url, name)
    load_dataset(cfg.dataset, dict(cfg.data_options), cfg.image_size, root / "data")
    env = {**ENV, "DGX_DATA_DIR": str(root / "data"), "DGX_RUNS_DIR": str(root / "runs")}
    workers = _Workers(url, name, env)
    t0, cpu0 = time.time(), _children_cpu()
    workers.start(WORKERS)
    try:
        workers.wait_all(TIMEOUT_S)
    finally:
        workers.stop()
    wall, cpu = time.time() - t0, _children_cpu() - cpu0
    trials = _Study(url, name).trials()
    assert all(t.state == TrialState.COMPLETE for t in trials) and len(trials) == 12, workers.output()
    (seed,) = _Study(url, name).seeds()
    return {"url": url, "name": name, "data_dir": str(root / "data"), "wall_s": wall, "cpu_s": cpu,
            "results": _results(trials), "seed_params": seed.params}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """``reference()``: the undisturbed run, made on first use (after a missing PostgreSQL has skipped)."""
    made: dict = {}

    def get() -> dict:
        if not made:
            made.update(_undisturbed(tmp_path_factory.mktemp("reference")))
        return made

    return get


@pytest.mark.parametrize("kind", ["journal", "postgres"])
def test_three_workers_survive_sigkills_and_connection_resets(kind, tmp_path, reference):
    url, name = _storage(kind, tmp_path), f"dgx-faults-{uuid.uuid4().hex[:8]}"
    app_name = f"dgx-faults-{uuid.uuid4().hex[:8]}"  # libpq's PGAPPNAME: this test's worker connections only
    reference = reference()
    rng = random.Random(FAULT_SEED)
    env = {**ENV, "DGX_DATA_DIR": reference["data_dir"], "DGX_RUNS_DIR": str(tmp_path / "runs"),
           "PGAPPNAME": app_name}
    workers = _Workers(url, name, env)
    try:
        _queue(tmp_path, url, name)
        study = _Study(url, name)
        t0, cpu0 = time.time(), _children_cpu()
        workers.start(WORKERS)
        faults = [_sigkill(study, workers, rng, t0)]
        if kind == "postgres":
            faults.append(_terminate_connections(study, workers, rng, app_name, t0))
        faults.append(_sigkill(study, workers, rng, t0))
        workers.wait_all(TIMEOUT_S)
        wall, cpu = time.time() - t0, _children_cpu() - cpu0
        out = workers.output()

        trials = study.trials()
        complete = Counter(queue.point_key(t.params) for t in trials if t.state == TrialState.COMPLETE)
        assert sorted(complete) == sorted(reference["results"]), out  # every grid point ...
        assert set(complete.values()) == {1}, (complete, out)  # ... COMPLETE exactly once
        assert all(t.state.is_finished() for t in trials), out  # nothing left RUNNING or WAITING
        lost = [t for t in trials if queue.retryable(t)]  # failed without a reason: killed, lost, interrupted
        # Retries of lost trials; two workers may both re-enqueue a lost point, and the second is then
        # closed as a duplicate without training (as in test_workers): those are counted apart.
        retries = [t for t in trials if "retry_of" in t.user_attrs and "duplicate_of" not in t.user_attrs]
        duplicate_retries = [t for t in trials if "retry_of" in t.user_attrs and "duplicate_of" in t.user_attrs]
        by_number = {t.number: t for t in trials}
        for fault in faults:
            if fault["fault"] != "sigkill":
                continue
            killed = by_number[fault["trial"]]
            assert queue.retryable(killed), (fault, killed.state, killed.user_attrs)
            assert len(killed.intermediate_values) >= 1  # killed after its first checkpoint ...
            fault["killed_in_epoch"] = len(killed.intermediate_values) + 1  # ... in this epoch (as stored)
            retry = next(t for t in retries if t.user_attrs["retry_of"] == killed.number)
            while retry.state != TrialState.COMPLETE:  # the retry itself may have been hit by the next fault
                retry = next(t for t in retries if t.user_attrs["retry_of"] == retry.number)
            assert retry.params == killed.params
            assert retry.user_attrs["resumed_from"] >= 1  # continued from the killed worker's checkpoint
        assert len(retries) == len(lost), [(t.number, t.state, t.user_attrs) for t in trials]
        (seed,) = [t for t in study.seeds() if t.state == TrialState.COMPLETE]
        assert seed.params == reference["seed_params"]  # the same best configuration retrained

        # Identical to the undisturbed run: per point (bit for bit), and the report.
        results = _results(trials)
        differ = {k: (results[k], reference["results"][k]) for k in results if results[k] != reference["results"][k]}
        assert not differ, differ
        report = _report(url, name)
        assert report == _report(reference["url"], reference["name"])
        assert "ERM" in report

        summary = {"storage": kind, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                   "reference_wall_s": round(reference["wall_s"], 1), "reference_cpu_s": round(reference["cpu_s"], 1),
                   "faults": faults, "killed_trials_retried": len(retries), "failed_retryable": len(lost),
                   "resumed_from": {t.user_attrs["retry_of"]: t.user_attrs.get("resumed_from") for t in retries},
                   "duplicate_retries_closed": len(duplicate_retries), "workers_started": len(workers.procs), "workers_died": workers.died,
                   "connection_reset": ("n/a" if kind != "postgres" else
                                        "restarted" if workers.died else "survived"),
                   "stale_journal_locks": out.count("Forcibly"),  # a worker killed holding the Journal lock
                   "points_complete": len(complete), "results_identical": True}
        print(json.dumps(summary))
    finally:
        workers.stop()
        _cleanup(url, [name, f"{name}.seeds"])


def test_a_retry_does_not_change_which_tied_point_is_best(tmp_path):
    """Two grid points tie on validation AUROC; killing the first one's worker (so it is retried under a
    higher trial number) must not change the selected configuration."""
    import time

    from optuna.storages.journal import JournalFileBackend

    from dgx.sweep import queue
    from dgx.sweep.study import _best_params

    def objective(trials):
        (trial,) = trials
        lr = trial.suggest_categorical("lr", [0.1, 0.2])
        trial.set_user_attr("run_id", f"run-{lr}")  # what dgx records: a hash of the config
        return [1.0]  # both points tie

    def run(kill_first: bool, path) -> dict:
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        study = optuna.create_study(storage=storage, direction="maximize")
        queue.enqueue_missing(study, [{"lr": 0.1}, {"lr": 0.2}])
        first = queue.claim(study)
        if kill_first:  # its worker dies: no heartbeat, reaped, enqueued again as a retry
            storage.set_trial_system_attr(queue.trial_id(first), queue.HEARTBEAT_ATTR, time.time() - 100)
            queue.reap(study, grace_s=10)
            queue.enqueue_missing(study, [{"lr": 0.1}, {"lr": 0.2}])
        else:
            queue.run_trials(study, [first], objective, 0.1, ())
        while (t := queue.claim(study)) is not None:
            queue.run_trials(study, [t], objective, 0.1, ())
        return _best_params(study)

    assert run(False, tmp_path / "a.journal") == run(True, tmp_path / "b.journal") == {"lr": 0.1}
