"""Exactly-once work queue on an Optuna study: claim, heartbeat, reap, retry, deduplicate.

Optuna's ``GridSampler`` can hand the same point to two workers at once, so dgx
does not let samplers pick grid points. The sweep *enqueues* every grid point
as a WAITING trial with fixed params, and workers claim WAITING trials with
``storage.set_trial_state_values(trial_id, RUNNING)``. That call is atomic in
every Optuna storage (a row lock in RDB, the ordered log in a Journal file):
of two workers racing for one trial, exactly one gets ``True``.

Enqueueing itself can race (two ``dgx sweep`` commands, or two workers retrying
the same lost trial), so a claimed trial is checked against the other trials
of its point. The *owner* of a point is its lowest-numbered trial that is not a
retryable failure; any other claimed trial is a duplicate and is closed
without training (state FAIL, ``duplicate_of`` and ``fail_reason`` set). Only
the owner trains and only its COMPLETE record is reported.

Liveness is a heartbeat in the trial's system attrs, written by a thread every
``heartbeat_s`` while the trial runs; Optuna's own heartbeat exists only for
RDB storages, this one works on Journal files too. A RUNNING trial silent for
``grace_s`` belongs to a dead worker: any worker marks it FAIL, and the point is
enqueued again with ``retry_of``; the retry resumes from the run folder's last
epoch checkpoint (keep ``DGX_RUNS_DIR`` on storage every worker sees).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger("dgx")

HEARTBEAT_ATTR = "dgx:heartbeat"


def worker_name() -> str:
    """host:pid of this process, stored on each trial it runs (for the dashboard and kill tests)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def point_key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


# ---- The only two places dgx reaches into Optuna's private API (checked on Optuna 4.2-4.5 and 5.0; the
# dependency is pinned to <6). The work queue claims, stamps and fails trials by their storage id through
# the study's storage: the public API offers neither (FrozenTrial has no public id; Study hides its storage).

def trial_id(t: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial (``FrozenTrial._trial_id``, ``Trial._trial_id``)."""
    return t._trial_id


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (``Study._storage``)."""
    return study._storage


def retryable(t: FrozenTrial) -> bool:
    """Failed without a recorded reason: interrupted, killed or lost, so worth resuming."""
    return t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs


def final(t: FrozenTrial) -> bool:
    """Finished for good: complete, pruned, or failed with a reason (a NaN loss, a duplicate)."""
    return t.state.is_finished() and not retryable(t)


def _params_of(t: FrozenTrial) -> dict:
    """The trial's grid point: its queued params when it was enqueued (a running trial's
    ``params`` fill in one by one as it suggests them, and a half-filled dict would look like
    another point), else the params it suggested."""
    fixed = t.system_attrs.get("fixed_params")
    return dict(fixed) if fixed else dict(t.params)


def owners(trials: Iterable[FrozenTrial]) -> dict[tuple, FrozenTrial]:
    """Each point's owner: its lowest-numbered trial that is not a retryable failure or a duplicate."""
    out: dict[tuple, FrozenTrial] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if retryable(t) or "duplicate_of" in t.user_attrs:
            continue
        out.setdefault(point_key(_params_of(t)), t)
    return out


def enqueue_missing(study: optuna.Study, points: list[dict]) -> int:
    """Enqueue the points that have no owner (none waiting, running or final); returns how many."""
    trials = study.get_trials(deepcopy=False)
    owned = owners(trials)
    lost = {point_key(_params_of(t)): t for t in trials if retryable(t)}
    n = 0
    for params in points:
        key = point_key(params)
        if key in owned:
            continue
        attrs = {"retry_of": lost[key].number} if key in lost else {}
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
        n += 1
    return n


def reap(study: optuna.Study, grace_s: float) -> list[int]:
    """Mark RUNNING trials without a heartbeat for ``grace_s`` as FAIL; return their numbers."""
    now, lost = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        last = float(beat) if beat is not None else (t.datetime_start.timestamp() if t.datetime_start else now)
        if now - last > grace_s:
            try:
                storage_of(study).set_trial_state_values(trial_id(t), TrialState.FAIL)
            except (RuntimeError, ValueError):  # it finished, or another worker reaped it first
                continue
            log.warning("trial #%d of %s had no heartbeat for %.0f s: its worker is presumed dead; it will be retried",
                        t.number, study.study_name, now - last)
            lost.append(t.number)
    return lost


def _take(study: optuna.Study, t: FrozenTrial) -> optuna.Trial | None:
    """Atomically move the WAITING trial ``t`` to RUNNING; None when another worker took it first."""
    try:
        if storage_of(study).set_trial_state_values(trial_id(t), TrialState.RUNNING):
            return optuna.Trial(study, trial_id(t))
    except (RuntimeError, ValueError):  # taken and finished by another worker meanwhile
        pass
    return None


def claim(study: optuna.Study) -> optuna.Trial | None:
    """Atomically take the oldest WAITING trial (None when the queue is empty)."""
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number):
        if (trial := _take(study, t)) is not None:
            return trial
    return None


def claim_like(study: optuna.Study, trial: optuna.Trial, n: int, key: Callable[[dict], tuple]) -> list[optuna.Trial]:
    """Atomically take up to ``n`` more WAITING trials whose point has ``trial``'s ``key`` (oldest first)."""
    if n < 1:
        return []
    want = key(_params_of(storage_of(study).get_trial(trial_id(trial))))
    taken: list[optuna.Trial] = []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number):
        if len(taken) >= n:
            break
        if key(_params_of(t)) == want and (other := _take(study, t)) is not None:
            taken.append(other)
    return taken


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial | None:
    """The owner of ``trial``'s point when that is another trial, else None."""
    mine = storage_of(study).get_trial(trial_id(trial))
    owner = owners(study.get_trials(deepcopy=False)).get(point_key(_params_of(mine)))
    return owner if owner is not None and owner.number != mine.number else None


def close_duplicate(study: optuna.Study, trial: optuna.Trial, owner: FrozenTrial) -> None:
    trial.set_user_attr("duplicate_of", owner.number)
    trial.set_user_attr("fail_reason", f"duplicate of trial #{owner.number} (same grid point); not trained")
    study.tell(trial, state=TrialState.FAIL)
    log.info("trial #%d of %s duplicates #%d: closed without training", trial.number, study.study_name, owner.number)


def close_waiting_duplicates(study: optuna.Study) -> int:
    """Close the WAITING trials whose point another trial owns; returns how many this call closed.

    A racing enqueue can add a duplicate after every point's owner was claimed. The
    workers finish the owners and stop, and without this the duplicate would stay
    WAITING in the study until some later ``dgx worker`` claimed it.
    """
    owned, n = owners(study.get_trials(deepcopy=False)), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        owner = owned.get(point_key(_params_of(t)))
        if owner is None or owner.number == t.number or (trial := _take(study, t)) is None:
            continue
        close_duplicate(study, trial, owner)
        n += 1
    return n


class Heartbeat:
    """Context manager: a daemon thread stamping the trial's heartbeat every ``interval`` seconds."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float):
        self.storage, self.trial_id, self.interval = storage_of(study), trial_id(trial), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dgx-heartbeat-{trial.number}", daemon=True)

    def beat(self) -> None:
        self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # finished meanwhile, or a storage hiccup: the next beat retries
                if self._stop.is_set():
                    return

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_trials(study: optuna.Study, trials: list[optuna.Trial],
               objective: Callable[[list[optuna.Trial]], list[float | BaseException]],
               heartbeat_s: float, final_errors: tuple[type[BaseException], ...]) -> None:
    """Run ``objective`` on claimed trials that train together (one, or a pack) under a heartbeat each, and
    record each trial's own outcome: ``objective`` returns a value or an exception per trial.

    A pruned trial is PRUNED; ``final_errors`` fail a trial for good (their ``fail_reason`` is set by the
    objective) and the worker goes on. An exception from ``objective`` itself (Ctrl-C included) leaves every
    trial retryable (FAIL without a reason) and propagates; so does, after all are recorded, the first
    outcome that is neither pruned nor in ``final_errors``."""
    for trial in trials:
        trial.set_user_attr("worker", worker_name())
    with contextlib.ExitStack() as beats:
        for trial in trials:
            beats.enter_context(Heartbeat(study, trial, heartbeat_s))
        try:
            outcomes = objective(trials)
        except BaseException:
            for trial in trials:
                _tell(study, trial, state=TrialState.FAIL)
            raise
    error = None
    for trial, outcome in zip(trials, outcomes):
        if isinstance(outcome, optuna.TrialPruned):
            _tell(study, trial, state=TrialState.PRUNED)
        elif isinstance(outcome, BaseException):
            _tell(study, trial, state=TrialState.FAIL)
            if not isinstance(outcome, final_errors):
                error = error or outcome
        else:
            _tell(study, trial, values=outcome)
    if error is not None:
        raise error


def _tell(study: optuna.Study, trial: optuna.Trial, **kwargs) -> None:
    try:
        study.tell(trial, **kwargs)
    except (RuntimeError, ValueError) as exc:  # reaped while it ran (a heartbeat gap > grace)
        log.warning("trial #%d of %s was declared lost while it ran (%s); its retry reuses the finished run folder",
                    trial.number, study.study_name, exc)


__all__ = ["enqueue_missing", "reap", "claim", "claim_like", "duplicate_of", "close_duplicate", "close_waiting_duplicates",
           "run_trials", "owners", "retryable", "final", "point_key", "Heartbeat"]
