"""Rendering report tables: markdown (targets in italics), LaTeX (booktabs; targets underlined), CSV and JSON."""

from __future__ import annotations

import io
import json
import re

import pandas as pd

from dgx.errors import unknown_choice
from dgx.report.formats import FORMATS, Table


def _md(table: Table) -> str:
    header = list(table.header)
    for i in table.target_cols:
        header[i] = f"_{header[i]}_"
    shown = []
    for row, is_target in zip(table.rows, table.target_rows):
        row = list(row)
        if is_target and row[0]:
            row[0] = f"_{row[0]}_"
        shown.append(row)
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(header)]
    right = [i > 0 and not header[i].startswith(("Method", "Δ")) for i in range(len(header))]
    right[0] = False

    def line(values):
        return "| " + " | ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right)) + "|"
    footer = ["", *table.footer] if table.footer else []
    return "\n".join([table.title, "", line(header), rule, *(line(r) for r in shown), "", table.note, *footer])


def latex_escape(text: str) -> str:
    """``text`` as LaTeX source: its special characters escaped, ±, —, Δ as LaTeX writes them."""
    return (text.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%").replace("_", r"\_")
            .replace("#", r"\#").replace("±", r"$\pm$").replace("—", "---").replace("Δ", r"$\Delta$"))


BOOKTABS = r"% requires \usepackage{booktabs}"  # \toprule, \midrule, \bottomrule
TARGET_LEGEND = "underlined = OOD target domain"  # LaTeX marks targets with \underline, markdown with _italics_


def latex_legend(text: str) -> str:
    """A table note written for markdown, reworded for LaTeX: targets are underlined there, not italic."""
    return re.sub(r"_italic_|\bitalics?\b", "underlined", text)


def latex_comment(text: str) -> str:
    """A LaTeX comment line holding ``text`` (a title or note, reworded for LaTeX)."""
    return "% " + latex_escape(latex_legend(text))


def _latex(table: Table) -> str:
    cols = "l" * 2 + "r" * (len(table.header) - 2)
    head = [latex_escape(h) for h in table.header]
    for i in table.target_cols:
        head[i] = rf"\underline{{{head[i]}}}"
    lines = [BOOKTABS, latex_comment(table.title), r"\begin{tabular}{" + cols + "}", r"\toprule",
             " & ".join(head) + r" \\", r"\midrule"]
    for row, is_target in zip(table.rows, table.target_rows):
        cells_ = [latex_escape(v) for v in row]
        if is_target and cells_[0]:
            cells_[0] = rf"\underline{{{cells_[0]}}}"
        lines.append(" & ".join(cells_) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", latex_comment(table.note)]
    lines += [latex_comment(f) for f in table.footer]
    return "\n".join(lines)


def render(tables: list[Table], fmt: str) -> str:
    """``tables`` as one text in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise unknown_choice("format", fmt, FORMATS)
    if fmt == "markdown":
        return "\n\n".join(_md(t) for t in tables) + "\n"
    if fmt == "latex":
        return "\n\n".join(_latex(t) for t in tables) + "\n"
    data = pd.concat([t.data.assign(table=t.title.split(" —")[0]) for t in tables], ignore_index=True)
    if fmt == "csv":
        buf = io.StringIO()
        data.to_csv(buf, index=False)
        return buf.getvalue()
    records = json.loads(data.to_json(orient="records"))
    return json.dumps({"tables": [{"title": t.title, "header": t.header, "rows": t.rows, "note": t.note,
                                   "headline": list(t.footer)} for t in tables], "cells": records}, indent=1) + "\n"


__all__ = ["render", "BOOKTABS", "TARGET_LEGEND", "latex_escape", "latex_legend", "latex_comment"]
