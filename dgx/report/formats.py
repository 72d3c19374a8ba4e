"""What every report table is made of, whatever builds or renders it: the :class:`Table`, the output formats,
and the text of a cell (a number, or a mark saying why there is none).

The bottom of dgx/report: the table builders (tables.py, selection.py, subgroups.py) fill Tables and the
renderer (render.py) draws them, both importing this module and never each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FORMATS = ("markdown", "latex", "csv", "json")
MISSING = "—"  # not run: no trial produced this number
NOT_APPLICABLE = "n/a"  # the number does not exist (ERM has no mask to gain over; one seed has no CI)


@dataclass
class Table:
    """A rendered-to-be table: title, header, rows of display strings, which rows are targets, footnote."""

    title: str
    header: list[str]
    rows: list[list[str]]
    target_rows: list[bool]  # row index -> its first column names a target domain
    note: str
    data: pd.DataFrame  # the numeric cells behind the table (csv/json output)
    target_cols: tuple[int, ...] = ()  # column indexes naming target domains (wide tables)
    footer: tuple[str, ...] = ()  # lines under the note: the headline comparisons (see dgx/report/headline.py)


def fmt_cell(mean: float, half: float, n: int) -> str:
    if n == 0 or np.isnan(mean):
        return MISSING
    return f"{100 * mean:.1f} ± " + ("n/a" if n == 1 or np.isnan(half) else f"{100 * half:.1f}")


def fmt_p(p: float) -> str:
    """'=0.0312', '<0.001' or '=n/a': the operator and value of a p-value as printed."""
    if pd.isna(p):
        return "=n/a"
    return "<0.001" if p < 0.001 else f"={p:.3g}"
