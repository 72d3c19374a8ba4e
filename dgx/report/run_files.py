"""What the report reads from a run folder besides the storage: the saved scores and subgroup keys.

Each training writes the selected checkpoint's labels and scores per domain to
``<runs_dir>/runs/<run_id>/scores.npz``, and the per-image subgroup keys beside them (``groups.npz``); per-run
intervals, ROC curves and subgroup tables are computed from these, never by retraining.
"""

from __future__ import annotations

from pathlib import Path

from dgx.errors import DgxError
from dgx.runs import GROUPS, SCORES, load_groups, load_scores, run_dir


def read_scores(runs_dir: Path, run_id: str) -> dict:
    """A run's saved scores ({} when it has none), or a one-line DgxError when the file is damaged."""
    return _read(runs_dir, run_id, SCORES, load_scores)


def read_groups(runs_dir: Path, run_id: str) -> dict:
    """A run's saved subgroup keys ({} when it has none), or a one-line DgxError when the file is damaged."""
    return _read(runs_dir, run_id, GROUPS, load_groups)


def _read(runs_dir: Path, run_id: str, name: str, load) -> dict:
    if not run_id:
        return {}
    path = run_dir(runs_dir, run_id) / name
    try:
        return load(path)
    except DgxError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated, foreign or garbled file: numpy and zipfile raise many types
        raise DgxError(f"{path} is damaged ({type(exc).__name__}); run `dgx doctor --fix` to quarantine that run, then "
                       "rerun its sweep to train it again, or report without --run-ci, --figure roc and --by") from None
