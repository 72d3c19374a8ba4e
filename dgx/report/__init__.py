"""Result tables in the shape of the paper, read from the Optuna storage.

``report(storage)`` is the one-call path: load every COMPLETE dgx trial of the
requested phase, then render Table 1 (AUROC per domain × method, mean ± 95%
t-interval across seeds, plus the target average).
"""

from __future__ import annotations

import optuna

from dgx.report.load import load_runs
from dgx.report.stats import mean_ci
from dgx.report.tables import table1, table1_cells

__all__ = ["load_runs", "mean_ci", "report", "table1", "table1_cells"]


def report(
    storage: str | optuna.storages.BaseStorage,
    study_prefix: str | tuple[str, ...] | None = None,
    phase: str | None = "seeds",
) -> str:
    """Markdown Table 1 for the trials in ``storage`` (see :func:`load_runs` for the filters)."""
    return table1(load_runs(storage, study_prefix=study_prefix, phase=phase))
