"""Result tables in the shape of the paper, read from the Optuna storage (or W&B).

``report(storage)`` is the one-call path: load every COMPLETE dgx trial of the
requested phase, filter, then render one of the paper's table shapes.
"""

from __future__ import annotations

import optuna
import pandas as pd

from dgx.errors import DgxError, unknown_choice
from dgx.report.formats import FORMATS
from dgx.report.load import load_runs
from dgx.report.render import render
from dgx.report.selection import selection_table
from dgx.report.tables import WIDE_TABLES, Baseline, build, cells
from dgx.stats import mean_ci

__all__ = ["load_runs", "mean_ci", "report", "search_runs", "table1", "table1_cells", "filter_runs"]


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
    search: pd.DataFrame | None = None,
) -> str:
    """A paper-shaped table for the trials in ``storage`` (see :func:`load_runs` for the filters), followed,
    for the seeds phase, by what each selection rule picks on the searches behind it and its regret
    (dgx/report/selection.py; ``search``: those searches' trials, else read from ``storage``)."""
    if runs is None:
        runs = load_runs(storage, study_prefix=study_prefix, phase=phase)
    runs = filter_runs(runs, **(filters or {}))
    tables = build(runs, shape, method=method, baseline=Baseline.parse(baseline), test=test)
    if search is None and storage is not None and phase == "seeds":
        search = search_runs(storage, study_prefix)
    if search is not None and shape in ("1", "2", "5"):
        shown = set(runs[["dataset", "method", "mask"]].itertuples(index=False, name=None))  # the table's rows
        kept = search[[row in shown for row in search[["dataset", "method", "mask"]].itertuples(index=False, name=None)]]
        if shape in ("2", "5"):
            kept = kept[kept["method"] == (method or WIDE_TABLES[shape])]
        table = selection_table(kept) if not kept.empty else None
        if table is not None:
            tables.append(table)
    return render(tables, fmt)


def search_runs(storage, study_prefix: str | tuple[str, ...] | None = None) -> pd.DataFrame | None:
    """The search-phase trials of ``storage`` (the studies ``study_prefix`` names), or None where there are none."""
    try:
        return load_runs(storage, study_prefix=study_prefix, phase="search")
    except DgxError:
        return None


def table1(runs: pd.DataFrame, fmt: str = "markdown", confidence: float = 0.95) -> str:
    """Render the paper's Table 1 (AUROC per domain × method) for ``runs``."""
    if fmt not in FORMATS:
        raise unknown_choice("table format", fmt, FORMATS)
    return render(build(runs, "1", confidence=confidence), fmt)


def table1_cells(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The numeric cells of Table 1 (see :func:`dgx.report.tables.cells`)."""
    return cells(runs, confidence)
