"""Result tables in the shape of the paper, read from the Optuna storage (or W&B).

``report(storage)`` is the one-call path: load every COMPLETE dgx trial of the
requested phase, filter, then render one of the paper's table shapes.
"""

from __future__ import annotations

import optuna
import pandas as pd

from dgx.errors import DgxError
from dgx.report.load import load_runs
from dgx.report.render import render
from dgx.report.stats import mean_ci
from dgx.report.tables import Baseline, build, table1, table1_cells

__all__ = ["load_runs", "mean_ci", "report", "table1", "table1_cells", "filter_runs"]


def filter_runs(runs: pd.DataFrame, *, dataset: list[str] | None = None, method: list[str] | None = None,
                mask: list[str] | None = None) -> pd.DataFrame:
    """Keep the runs matching every given filter (each a list of allowed values); DgxError if none remain."""
    out = runs
    for column, allowed in (("dataset", dataset), ("method", method), ("mask", mask)):
        if allowed:
            kept = out[out[column].isin(allowed)]
            if kept.empty:
                raise DgxError(f"no runs with {column} in {allowed}; available: {sorted(out[column].unique())}")
            out = kept
    return out


def report(
    storage: str | optuna.storages.BaseStorage,
    study_prefix: str | tuple[str, ...] | None = None,
    phase: str | None = "seeds",
    *,
    shape: str = "1",
    fmt: str = "markdown",
    method: str | None = None,
    baseline: str | None = None,
    test: str = "t",
    filters: dict | None = None,
    runs: pd.DataFrame | None = None,
) -> str:
    """A paper-shaped table for the trials in ``storage`` (see :func:`load_runs` for the filters)."""
    if runs is None:
        runs = load_runs(storage, study_prefix=study_prefix, phase=phase)
    runs = filter_runs(runs, **(filters or {}))
    return render(build(runs, shape, method=method, baseline=Baseline.parse(baseline), test=test), fmt)
