"""Paper-shaped result tables from the runs frame of :func:`dgx.report.load_runs`.

Every table is built in two steps: a *cells* frame (one row per table cell,
with numbers and display text), laid out here as a :class:`~dgx.report.formats.Table`,
and a renderer (dgx/report/render.py: markdown, latex, csv, json). Which trials count
is dgx/report/trials.py's, how rows are named and ordered dgx/report/labels.py's, the
comparisons under a table dgx/report/headline.py's. The shapes (paper,
``../shared/seed/paper.txt``):

- **Table 1**: domain × method (rows), AUROC and n (columns);
- **Tables 2 and 5**: mask type (rows) × domain (columns), for one method
  (ActDiff in Table 2, RRR in Table 5);
- **Table 3**: domain × method with a Gain column: the difference to the same
  method with a reference mask (abnormality) on the same data.

Every shape has the target average (per seed: the mean over all target
domains, then mean ± CI across seeds), marks targets (markdown italics,
LaTeX underline as in the paper), shows a missing cell as "—" with n = 0, and
can carry a paired comparison to a baseline (ERM, or a reference mask) with a
``*`` where p < 0.05.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dgx.errors import DgxError, unknown_choice
from dgx.methods import BASELINE, METHODS
from dgx.report.formats import MISSING, NOT_APPLICABLE, Table, fmt_cell, fmt_p
from dgx.report.headline import headline
from dgx.report.labels import MASK_NAMES, METHOD_NAMES, mask_rank, method_label, method_masks
from dgx.report.trials import AVERAGE, per_seed, replicates, select_trials, sources_targets
from dgx.stats import mean_ci, paired_difference

# The paper's per-method tables of masks: Table 2 is ActDiff's, Table 5 RRR's.
WIDE_TABLES = {"2": "actdiff", "5": "rrr"}
PAPER_MASKS = ("abnormality", "scaled", "periphery")  # the rows of Tables 2 and 5, run or not
SHAPES = ("1", "2", "3", "5")
ALPHA = 0.05  # a paired comparison with p below this is marked "*"


@dataclass(frozen=True)
class Baseline:
    """What each cell is compared with, seed by seed: ERM, or the same method with a reference mask."""

    kind: str  # BASELINE ("erm") | "mask"
    mask: str = ""

    @classmethod
    def parse(cls, text: str | None) -> "Baseline | None":
        if not text or text == "none":
            return None
        if text == BASELINE:
            return cls(BASELINE)
        if text.startswith("mask:") and text[5:]:
            return cls("mask", text[5:])
        raise DgxError(f"--baseline {text!r} must be erm, mask:NAME (e.g. mask:abnormality) or none")

    def group(self, method: str, mask: str) -> tuple[str, str] | None:
        if self.kind == BASELINE:
            return None if method == BASELINE else (BASELINE, "none")
        return None if method == BASELINE or mask == self.mask else (method, self.mask)

    def label(self) -> str:
        return METHOD_NAMES[BASELINE] if self.kind == BASELINE else f"{self.mask} mask"


def cells(runs: pd.DataFrame, confidence: float = 0.95, baseline: Baseline | None = None,
          test: str = "t") -> pd.DataFrame:
    """Every (dataset, domain, method, mask) cell: mean, CI half width, n; with a baseline also
    the paired difference (diff, diff_half, p, significant) against it across shared seeds."""
    if runs.empty:
        raise DgxError("no runs to tabulate; load_runs() returned no rows")
    seeds = per_seed(runs)
    rows = []
    for experiment in dict.fromkeys(runs["dataset"]):
        exp = runs[runs["dataset"] == experiment]
        sources, targets = sources_targets(exp)
        columns = sources + targets + ([AVERAGE] if targets else [])
        for domain in columns:
            role = "source" if domain in sources else ("target" if domain in targets else "average")
            for method, mask in method_masks(exp):
                values = seeds.loc[(experiment, method, mask)][domain]
                mean, half, n = mean_ci(values, confidence)
                row = {"dataset": experiment, "domain": domain, "role": role, "method": method, "mask": mask,
                       "label": method_label(method, mask), "mean": mean, "half_width": half, "n": n}
                ref = baseline.group(method, mask) if baseline else None
                if baseline is not None:  # why a Δ is absent: this row is the baseline, or it was not run
                    row["vs"] = ("baseline" if ref is None else
                                 "ok" if (experiment, *ref) in seeds.index.droplevel("seed") else "not run")
                if ref is not None and (experiment, *ref) in seeds.index.droplevel("seed"):
                    other = seeds.loc[(experiment, *ref)][domain]
                    shared = values.index.intersection(other.index)
                    diff, dhalf, npair, p = paired_difference(values[shared], other[shared], confidence, test)
                    row.update(diff=diff, diff_half=dhalf, pairs=npair, p=p)
                rows.append(row)
    frame = pd.DataFrame(rows)
    if "p" in frame:  # Holm's step-down correction over each dataset's comparisons (one table's stars)
        frame["p_holm"] = np.nan
        for _, part in frame.groupby("dataset", sort=False):
            tested = part["p"].dropna()
            frame.loc[tested.index, "p_holm"] = holm(tested.to_numpy(float))
        frame["significant"] = frame["p_holm"] < ALPHA
    return frame


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def _fmt_diff(row) -> str:
    if row.get("vs") == "baseline":
        return NOT_APPLICABLE
    if "diff" not in row or pd.isna(row.get("diff")):
        return MISSING
    star = "*" if row.get("significant") else ""
    half = "n/a" if pd.isna(row["diff_half"]) else f"{100 * row['diff_half']:.1f}"
    return f"{100 * row['diff']:+.1f} ± {half}{star} (p{fmt_p(row['p'])})"


# ---------------------------------------------------------------- shapes

def _note(baseline: Baseline | None, test: str, extra: str = "", part: pd.DataFrame | None = None,
          runs: pd.DataFrame | None = None) -> str:
    unit, which = replicates(runs)
    note = f"_italic_ = OOD target domain; n = {unit}{which}; {MISSING} = not run; {NOT_APPLICABLE} = not applicable"
    if baseline is not None:
        test_name = "paired t" if test == "t" else "Wilcoxon signed-rank"
        m = int(part["p"].notna().sum()) if part is not None and "p" in part else 0
        note += (f"; Δ = paired difference to {baseline.label()} over shared {unit} (± CI, {test_name} p); "
                 f"* = p < {ALPHA} after Holm's correction over the {m} comparisons of this dataset")
        note += _unreachable(test, part)
    note += _average_note(part)
    return note + (f"; {extra}" if extra else "") + "."


def _average_note(part: pd.DataFrame | None) -> str:
    """Say so where a row's target average stands on fewer seeds than its target cells."""
    if part is None or part.empty or not (part["role"] == "average").any():
        return ""
    short = []
    for label, rows in part.groupby("label", sort=False):
        avg = rows.loc[rows["role"] == "average", "n"]
        cells_n = rows.loc[rows["role"] == "target", "n"]
        if len(avg) and len(cells_n) and int(avg.iloc[0]) < int(cells_n.max()):
            short.append(f"{label} {int(avg.iloc[0])} of {int(cells_n.max())}")
    if not short:
        return ""
    return (f"; {AVERAGE.lower()} only over seeds scored on every target, fewer than its cells for "
            + ", ".join(short))


def _unreachable(test: str, part: pd.DataFrame | None) -> str:
    """A warning when the test cannot reach significance at this n (exact Wilcoxon: p >= 2 / 2^n)."""
    if test != "wilcoxon" or part is None or "pairs" not in part or part["pairs"].dropna().empty:
        return ""
    n = int(part["pairs"].dropna().min())
    smallest = 2.0 / 2 ** n
    if smallest < ALPHA:
        return ""
    return (f"; with {n} paired seeds the smallest Wilcoxon p is {smallest:.3g}, so no cell can be starred "
            "(more seeds, or --test t)")


def table_title(what: str, runs: pd.DataFrame, experiment: str, confidence: float) -> str:
    """A table's title: ``what``, then what its cells are and the phases, profiles and source they come from."""
    exp = runs[runs["dataset"] == experiment]
    sources = ", ".join(dict.fromkeys(exp.loc[exp["role"] == "source", "domain"]))
    phases = ", ".join(sorted(exp["phase"].unique()))
    profiles = ", ".join(sorted(exp["profile"].unique())) if "profile" in exp else "paper"
    return (f"{what} — test AUROC (%), mean ± {confidence * 100:g}% CI (Student t) across {replicates(exp)[0]}; "
            f"phase: {phases}; "
            f"profile: {profiles}; source: {sources} (dataset {experiment})")


def table_long(runs: pd.DataFrame, shape: str, confidence: float, baseline: Baseline | None, test: str,
               gain_mask: str = "periphery", reference: str = "abnormality", notes: tuple[str, ...] = ()) -> list[Table]:
    """Table 1 (domain × method) or Table 3 (the same, periphery methods with a Gain column)."""
    c = cells(runs, confidence, baseline, test)
    out = []
    for experiment in dict.fromkeys(c["dataset"]):
        part = c[c["dataset"] == experiment]
        if shape == "3":
            keep = (part["method"] == BASELINE) | (part["mask"] == gain_mask)
            if not ((part["mask"] == gain_mask) & (part["method"] != BASELINE)).any():
                raise DgxError(f"Table 3 needs methods trained with the {gain_mask} mask on {experiment}; "
                               f"found {sorted(set(part['label']))}")
            ref = part[(part["mask"] == reference)].set_index(["domain", "method"])["mean"]
            part = part[keep].copy()
            part["gain"] = [row.mean - ref.get((row.domain, row.method), np.nan) if row.method != BASELINE else np.nan
                            for row in part.itertuples()]
        header = ["Dataset", "Method", "AUROC", "n"] + (["Gain"] if shape == "3" else [])
        header += ["Δ vs " + baseline.label()] if baseline else []
        rows, targets, previous = [], [], None
        for row in part.to_dict("records"):
            line = [row["domain"] if row["domain"] != previous else "", row["label"],
                    fmt_cell(row["mean"], row["half_width"], row["n"]), str(row["n"])]
            if shape == "3":
                line.append(NOT_APPLICABLE if row["method"] == BASELINE else
                            MISSING if pd.isna(row["gain"]) else f"{100 * row['gain']:+.1f}")
            if baseline:
                line.append(_fmt_diff(row))
            rows.append(line)
            targets.append(row["role"] == "target")
            previous = row["domain"]
        what = "Table 1" if shape == "1" else f"Table 3 ({gain_mask} masks; Gain vs {reference})"
        extra = "; ".join(([f"Gain = AUROC points over the same method with {reference} masks"]
                           if shape == "3" else []) + list(notes))
        footer = tuple(headline(runs[runs["dataset"] == experiment], confidence, test))
        out.append(Table(table_title(what, runs, experiment, confidence), header, rows, targets,
                         _note(baseline, test, extra, part, runs[runs["dataset"] == experiment]),
                         part.reset_index(drop=True), footer=footer))
    return out


def table_wide(runs: pd.DataFrame, method: str, confidence: float, baseline: Baseline | None,
               test: str, notes: tuple[str, ...] = ()) -> list[Table]:
    """Tables 2 and 5: mask type × domain for one method; every paper mask is a row, run or not."""
    if method not in METHODS:
        raise unknown_choice("method", method, tuple(METHODS))
    name = METHOD_NAMES[method]
    c = cells(runs, confidence, baseline, test)  # baselines may be other methods (ERM)
    out = []
    for experiment in dict.fromkeys(c["dataset"]):
        every = c[c["dataset"] == experiment]
        part = every[every["method"] == method]
        domains = list(dict.fromkeys(every["domain"]))
        roles = dict(zip(every["domain"], every["role"]))
        masks = sorted(set(PAPER_MASKS) | set(part["mask"]), key=mask_rank)
        found = part.set_index(["mask", "domain"])
        rows = []
        for mask in masks:
            line = [MASK_NAMES.get(mask, mask)]
            for domain in domains:
                if (mask, domain) not in found.index:
                    line.append(MISSING)
                    continue
                r = found.loc[(mask, domain)]
                text = fmt_cell(r["mean"], r["half_width"], r["n"])
                if text != MISSING:
                    text += f" ({r['n']})"
                if baseline and "significant" in r and r.get("significant") is True:
                    text += "*"
                line.append(text)
            rows.append(line)
        table = next((f"Table {n}" for n, m in WIDE_TABLES.items() if m == method), "Table")
        target_cols = tuple(i + 1 for i, d in enumerate(domains) if roles[d] == "target")
        extra = [f"(n) = {replicates(runs[runs['dataset'] == experiment])[0]}"] + ([f"no {name} runs on {experiment}: every row is {MISSING}, run "
                                    f"`dgx sweep {method} --mask MASK` to fill it"] if part.empty else [])
        out.append(Table(table_title(f"{table}: {name} by segmentation type", runs, experiment, confidence),
                         ["Segmentation type", *domains], rows, [False] * len(rows),
                         _note(baseline, test, "; ".join(extra + list(notes)), part, runs[runs["dataset"] == experiment]),
                         part.reset_index(drop=True),
                         target_cols))
    return out


# ---------------------------------------------------------------- one shape, by name

def build(runs: pd.DataFrame, shape: str = "1", *, method: str | None = None, confidence: float = 0.95,
          baseline: Baseline | None = None, test: str = "t", gain_mask: str = "periphery",
          reference: str = "abnormality") -> list[Table]:
    """The tables of one paper shape for ``runs``."""
    if shape not in SHAPES:
        raise unknown_choice("table", shape, SHAPES)
    runs, notes = select_trials(runs)
    if shape in ("2", "5"):
        return table_wide(runs, method or WIDE_TABLES[shape], confidence, baseline, test, tuple(notes))
    return table_long(runs, shape, confidence, baseline, test, gain_mask, reference, tuple(notes))
