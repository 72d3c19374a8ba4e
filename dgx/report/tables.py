"""Paper-style result tables from the runs frame of :func:`dgx.report.load_runs`.

Each table is built in two steps: a cells DataFrame (numbers plus display
strings, one row per table row) and a renderer for the output format. Only
Markdown is rendered today; LaTeX/CSV/JSON only need a new entry in
``_RENDERERS`` because they can read the same cells frame.

Markdown conventions (Table 1): target (OOD) domains are in _italics_, as the
paper underlines them; a cell is ``mean ± half-width`` in AUROC percent, the
half-width being the Student-t confidence interval across seeds; "n/a" means a
single seed (no interval), and "—" with n = 0 means no result at all.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from dgx.errors import DgxError, unknown_choice
from dgx.report.stats import mean_ci

METHOD_NAMES = {"erm": "ERM", "actdiff": "ActDiff", "rrr": "RRR", "gradmask": "GradMask"}
_METHOD_ORDER = tuple(METHOD_NAMES)
_MASK_ORDER = ("abnormality", "scaled", "periphery", "none")
MISSING = "—"
AVERAGE = "Target average"
TARGET_NOTE = "_italic_ = OOD target domain; n = number of seeds; — = no result."


def method_label(method: str, mask: str) -> str:
    """Display name, e.g. "ERM" or "RRR (periphery)"."""
    name = METHOD_NAMES.get(method, method)
    # ERM never uses a mask; naming one would only add noise. Any other
    # combination keeps the mask so that two groups never share a label.
    return name if method == "erm" and mask == "none" else f"{name} ({mask})"


def _rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


def _groups(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(method, mask) pairs in paper order: ERM, ActDiff, RRR, GradMask."""
    pairs = runs[["method", "mask"]].drop_duplicates().itertuples(index=False)
    return sorted(pairs, key=lambda p: (_rank(p[0], _METHOD_ORDER), _rank(p[1], _MASK_ORDER)))


def _domains(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Source and target domains in first-appearance order (load_runs keeps display order)."""
    sources = list(dict.fromkeys(runs.loc[runs["role"] == "source", "domain"]))
    targets = [d for d in dict.fromkeys(runs.loc[runs["role"] == "target", "domain"]) if d not in sources]
    return sources, targets


def _check_unique_seeds(runs: pd.DataFrame) -> None:
    """One trial per seed per group, else the mean would mix configurations."""
    trials = runs[["dataset", "method", "mask", "seed", "study", "trial"]].drop_duplicates()
    dup = trials[trials.duplicated(["dataset", "method", "mask", "seed"], keep=False)]
    if dup.empty:
        return
    first = dup.iloc[0]
    same = dup[(dup[["dataset", "method", "mask", "seed"]] == first[["dataset", "method", "mask", "seed"]]).all(axis=1)]
    where = ", ".join(f"{s}#{t}" for s, t in zip(same["study"], same["trial"]))
    raise DgxError(
        f"{method_label(first['method'], first['mask'])} on {first['dataset']} has {len(same)} trials with seed "
        f"{first['seed']} ({where}): mixed configurations; pass a study prefix (--study-prefix) or a phase "
        "to select one set of runs"
    )


def _cell(experiment: str, domain: str, role: str, label: str, values, confidence: float) -> dict:
    mean, half, n = mean_ci(values, confidence)
    if n == 0:
        text = MISSING
    else:
        text = f"{100 * mean:.1f} ± " + ("n/a" if n == 1 else f"{100 * half:.1f}")
    return {"experiment": experiment, "Dataset": domain, "Method": label, "AUROC": text, "n": n,
            "role": role, "mean": mean, "half_width": half}


def table1_cells(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The cells of Table 1, one row per (experiment, domain, method).

    ``experiment`` is the dgx dataset (e.g. "decoy-cxr"); "Dataset" is the
    domain, as in the paper. Rows: the source domain(s), then targets in their
    display order, then the "Target average" block. The target average of a
    method takes, per trial (seed), the mean AUROC over *all* target domains of
    the experiment, then mean ± CI across trials; a trial missing any target
    does not count, because averages over different target sets do not compare.
    Display columns: Dataset, Method, AUROC, n; numeric: mean, half_width
    (fractions, not percent); role is "source", "target" or "average".
    """
    if runs.empty:
        raise DgxError("no runs to tabulate; load_runs() returned no rows")
    _check_unique_seeds(runs)
    cells: list[dict] = []
    for experiment in dict.fromkeys(runs["dataset"]):
        exp = runs[runs["dataset"] == experiment]
        sources, targets = _domains(exp)
        groups = _groups(exp)
        by_group = {g: exp[(exp["method"] == g[0]) & (exp["mask"] == g[1])] for g in groups}
        for domain in sources + targets:
            role = "source" if domain in sources else "target"
            for (method, mask), rows in by_group.items():
                values = rows.loc[rows["domain"] == domain, "auroc"]
                cells.append(_cell(experiment, domain, role, method_label(method, mask), values, confidence))
        if not targets:
            continue
        for (method, mask), rows in by_group.items():
            tgt = rows[rows["domain"].isin(targets)]
            wide = tgt.set_index(["study", "trial", "domain"])["auroc"].unstack("domain")
            per_trial = wide.reindex(columns=targets).mean(axis=1, skipna=False)
            cells.append(_cell(experiment, AVERAGE, "average", method_label(method, mask), per_trial, confidence))
    return pd.DataFrame(cells)


def _title(runs: pd.DataFrame, experiment: str, confidence: float) -> str:
    exp = runs[runs["dataset"] == experiment]
    sources = ", ".join(dict.fromkeys(exp.loc[exp["role"] == "source", "domain"]))
    phases = ", ".join(sorted(exp["phase"].unique()))
    return (f"Table 1 — test AUROC (%), mean ± {confidence * 100:g}% CI (Student t) across seeds; "
            f"phase: {phases}; source: {sources} (dataset {experiment})")


def _markdown_table(cells: pd.DataFrame) -> str:
    """One block: italic targets, dataset name only on the first row of its block."""
    shown = []
    previous = None
    for row in cells.itertuples(index=False):
        name = f"_{row.Dataset}_" if row.role == "target" else row.Dataset
        shown.append([name if row.Dataset != previous else "", row.Method, row.AUROC, str(row.n)])
        previous = row.Dataset
    header = ["Dataset", "Method", "AUROC", "n"]
    right = [False, False, True, True]
    widths = [max(len(h), *(len(r[i]) for r in shown)) for i, h in enumerate(header)]

    def line(values: list[str]) -> str:
        padded = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2) for w, r in zip(widths, right)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in shown])


def _render_markdown(runs: pd.DataFrame, cells: pd.DataFrame, confidence: float) -> str:
    blocks = []
    for experiment in dict.fromkeys(cells["experiment"]):
        part = cells[cells["experiment"] == experiment]
        blocks.append("\n\n".join([_title(runs, experiment, confidence), _markdown_table(part), TARGET_NOTE]))
    return "\n\n".join(blocks) + "\n"


_RENDERERS: dict[str, Callable[[pd.DataFrame, pd.DataFrame, float], str]] = {"markdown": _render_markdown}


def table1(runs: pd.DataFrame, fmt: str = "markdown", confidence: float = 0.95) -> str:
    """Render the paper's Table 1 (AUROC per domain × method) for ``runs``.

    ``runs`` is the frame of :func:`dgx.report.load_runs`. One table per dgx
    dataset, each with a title line (phase, confidence, source) and a footnote.
    Raises DgxError for an unknown format or for several trials sharing a seed
    within one (dataset, method, mask) group.
    """
    if fmt not in _RENDERERS:
        raise unknown_choice("table format", fmt, _RENDERERS)
    cells = table1_cells(runs, confidence)
    return _RENDERERS[fmt](runs, cells, confidence)
