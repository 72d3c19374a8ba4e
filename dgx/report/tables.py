"""Paper-shaped result tables from the runs frame of :func:`dgx.report.load_runs`.

Every table is built in two steps: a *cells* frame (one row per table cell,
with numbers and display text) and a renderer (markdown, latex, csv, json).
The shapes (paper, ``../shared/seed/paper.txt``):

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
from dgx.report.load import ORACLE
from dgx.stats import mean_ci, paired_difference

# Display names, in table order: every registered method (its own display_name), then the oracle row.
METHOD_NAMES = {**{name: cls.display_name for name, cls in METHODS.items()},
                ORACLE: f"Oracle ({METHODS[BASELINE].display_name}, shortcut decorrelated)"}
# The paper's per-method tables of masks: Table 2 is ActDiff's, Table 5 RRR's.
WIDE_TABLES = {"2": "actdiff", "5": "rrr"}
MASK_NAMES = {"abnormality": "Abnormality", "scaled": "Scaled abnormality", "periphery": "Lung periphery",
              "gaze": "Gaze", "none": "None"}
_METHOD_ORDER = tuple(METHOD_NAMES)
_MASK_ORDER = ("abnormality", "scaled", "periphery", "gaze", "none")
MISSING = "—"  # not run: no trial produced this number
NOT_APPLICABLE = "n/a"  # the number does not exist (ERM has no mask to gain over; one seed has no CI)
PAPER_MASKS = ("abnormality", "scaled", "periphery")  # the rows of Tables 2 and 5, run or not
AVERAGE = "Target average"
SHAPES = ("1", "2", "3", "5")
FORMATS = ("markdown", "latex", "csv", "json")
ALPHA = 0.05  # a paired comparison with p below this is marked "*"


def method_label(method: str, mask: str) -> str:
    """Display name, e.g. "ERM" or "RRR (periphery)"."""
    name = METHOD_NAMES.get(method, method)
    maskless = method == ORACLE or (method in METHODS and not METHODS[method].uses_mask)
    return name if maskless and mask == "none" else f"{name} ({mask})"


def _rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


def _groups(runs: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = runs[["method", "mask"]].drop_duplicates().itertuples(index=False)
    return sorted(pairs, key=lambda p: (_rank(p[0], _METHOD_ORDER), _rank(p[1], _MASK_ORDER)))


def _domains(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    sources = list(dict.fromkeys(runs.loc[runs["role"] == "source", "domain"]))
    targets = [d for d in dict.fromkeys(runs.loc[runs["role"] == "target", "domain"]) if d not in sources]
    return sources, targets


def _mixed(same: pd.DataFrame, why: str) -> DgxError:
    first = same.iloc[0]
    where = ", ".join(f"{s}#{t}" for s, t in zip(same["study"], same["trial"]))
    return DgxError(
        f"{method_label(first['method'], first['mask'])} on {first['dataset']} has {len(same)} {why} with seed "
        f"{first['seed']} ({where}): mixed configurations; pass a study prefix (--study-prefix) or a phase "
        "to select one set of runs"
    )


def select_trials(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One trial per (dataset, method, mask, seed), and a note for each choice made.

    - Seeds-phase trials win over search trials (``--phase all``: the seeds
      phase retrains the selected point; its seed 0 *is* the selected search run).
    - Among search trials (a grid shares one seed), the one the sweep itself
      selects: the best source-validation AUROC, ties to the smaller run id.
      Target domains never take part (model selection on the source only).
    - Trials naming the same run folder are one training, counted once.
    - Two different seeds-phase trainings, or trainings of different profiles,
      for one seed are mixed configurations: a one-line error.
    """
    key = ["dataset", "method", "mask", "seed"]
    cols = ["study", "trial", *key, "phase"] + [c for c in ("profile", "run_id", "val_auroc") if c in runs]
    trials = runs[cols].drop_duplicates(["study", "trial"]).copy()
    if "profile" in trials:
        profiles = trials.groupby(key)["profile"].transform("nunique")
        if (profiles > 1).any():
            first = trials[profiles > 1].iloc[0]
            same = trials[(trials[key] == first[key]).all(axis=1)]
            raise _mixed(same, f"trials of profiles {', '.join(sorted(set(same['profile'])))}")
    run_id = trials["run_id"] if "run_id" in trials else pd.Series("", index=trials.index)
    # Distinct trainings: a run folder counts once; trials without one are each their own.
    trials["_training"] = np.where(run_id.astype(str) != "", run_id.astype(str),
                                   trials["study"] + "#" + trials["trial"].astype(str))
    trials["_seeds"] = trials["phase"] == "seeds"
    trials["_val"] = trials["val_auroc"].fillna(-np.inf) if "val_auroc" in trials else -np.inf
    keep, notes, picked, candidates = [], [], 0, 0
    for _, group in trials.groupby(key, sort=False):
        seeds = group[group["_seeds"]]
        if not seeds.empty:
            distinct = seeds.drop_duplicates("_training")
            if len(distinct) > 1:
                raise _mixed(distinct, "trials")
            keep.append(distinct.index[0])
            continue
        distinct = group.drop_duplicates("_training")
        # Ties as the sweep breaks them: the smaller run id (a retried point keeps it, not its trial number).
        best = distinct.sort_values(["_val", "_training", "study", "trial"], ascending=[False, True, True, True],
                                    kind="stable")
        keep.append(best.index[0])
        if len(distinct) > 1:
            picked, candidates = picked + 1, candidates + len(distinct)
    if picked:
        notes.append(f"search phase: per method, mask and seed the trial with the best source-validation AUROC "
                     f"({candidates} trials in {picked} such group{'s' if picked > 1 else ''}), as the sweep "
                     "selects; targets play no part")
    chosen = trials.loc[keep, ["study", "trial"]]
    out = runs.merge(chosen, on=["study", "trial"], how="inner") if len(chosen) < len(trials) else runs
    return out, notes


def per_seed(runs: pd.DataFrame) -> pd.DataFrame:
    """AUROC per (dataset, method, mask, seed) × domain, plus the per-seed target average column."""
    runs = select_trials(runs)[0]
    out = []
    for experiment in dict.fromkeys(runs["dataset"]):
        exp = runs[runs["dataset"] == experiment]
        sources, targets = _domains(exp)
        wide = exp.pivot_table(index=["dataset", "method", "mask", "seed"], columns="domain", values="auroc",
                               aggfunc="first", dropna=False)
        wide = wide.reindex(columns=sources + targets)
        # A seed missing any target has no average: averages over different target sets do not compare.
        wide[AVERAGE] = wide[targets].mean(axis=1, skipna=False) if targets else np.nan
        out.append(wide)
    return pd.concat(out)


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
        sources, targets = _domains(exp)
        columns = sources + targets + ([AVERAGE] if targets else [])
        for domain in columns:
            role = "source" if domain in sources else ("target" if domain in targets else "average")
            for method, mask in _groups(exp):
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


def fmt_cell(mean: float, half: float, n: int) -> str:
    if n == 0 or np.isnan(mean):
        return MISSING
    return f"{100 * mean:.1f} ± " + ("n/a" if n == 1 or np.isnan(half) else f"{100 * half:.1f}")


def _fmt_diff(row) -> str:
    if row.get("vs") == "baseline":
        return NOT_APPLICABLE
    if "diff" not in row or pd.isna(row.get("diff")):
        return MISSING
    star = "*" if row.get("significant") else ""
    half = "n/a" if pd.isna(row["diff_half"]) else f"{100 * row['diff_half']:.1f}"
    return f"{100 * row['diff']:+.1f} ± {half}{star} (p{fmt_p(row['p'])})"


def fmt_p(p: float) -> str:
    """'=0.0312', '<0.001' or '=n/a': the operator and value of a p-value as printed."""
    if pd.isna(p):
        return "=n/a"
    return "<0.001" if p < 0.001 else f"={p:.3g}"


# ---------------------------------------------------------------- shapes

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
    footer: tuple[str, ...] = ()  # lines under the note: the headline comparisons (see headline())


def replicates(runs: pd.DataFrame | None) -> tuple[str, str]:
    """What n counts, and which draws: ("seeds", "") on real data; on generated data ("replicates", "; ..."),
    where a replicate is a data draw and an initialization (dgx.data.GENERATED)."""
    if runs is None or "draw" not in runs or not runs["draw"].notna().any():
        return "seeds", ""
    draws = sorted({int(d) for d in runs["draw"].dropna()})
    span = f"{draws[0]}–{draws[-1]}" if draws == list(range(draws[0], draws[-1] + 1)) else ", ".join(map(str, draws))
    return "replicates", f"; each its own data draw and initialization: draw{'s' if len(draws) > 1 else ''} {span}"


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


def _title(what: str, runs: pd.DataFrame, experiment: str, confidence: float) -> str:
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
        out.append(Table(_title(what, runs, experiment, confidence), header, rows, targets,
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
        masks = sorted(set(PAPER_MASKS) | set(part["mask"]), key=lambda m: _rank(m, _MASK_ORDER))
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
        out.append(Table(_title(f"{table}: {name} by segmentation type", runs, experiment, confidence),
                         ["Segmentation type", *domains], rows, [False] * len(rows),
                         _note(baseline, test, "; ".join(extra + list(notes)), part, runs[runs["dataset"] == experiment]),
                         part.reset_index(drop=True),
                         target_cols))
    return out


MIN_HEADROOM = 0.05  # AUROC: below 5 points a share of the headroom is mostly noise (1 point gave "−633%")


def headroom_is_real(gap: float, half: float) -> bool:
    """Whether "recovers X% of the oracle headroom" means something: the oracle at least :data:`MIN_HEADROOM`
    above ERM on the target average, and the paired CI of that difference above 0."""
    return bool(np.isfinite(gap) and gap >= MIN_HEADROOM and np.isfinite(half) and gap - half > 0)


def headline(runs: pd.DataFrame, confidence: float = 0.95, test: str = "t") -> list[str]:
    """The comparisons a reader looks for first, on the target average of one dataset's runs.

    Each method against ERM, paired by seed (mean difference, CI, p), and, when
    an oracle was trained (ERM on the same source with its shortcut
    decorrelated), the share of the oracle-minus-ERM gap each method recovers:
    (method − ERM) / (oracle − ERM), from the seed means, where that gap is real (:func:`headroom_is_real`).
    """
    if BASELINE not in set(runs["method"]):
        return []
    seeds = per_seed(runs)[AVERAGE]
    experiment = runs["dataset"].iloc[0]
    erm = seeds.loc[(experiment, BASELINE, "none")]
    if erm.dropna().empty:
        return []
    oracle = seeds.loc[(experiment, ORACLE, "none")] if (ORACLE in set(runs["method"])) else None
    test_name = "paired t" if test == "t" else "Wilcoxon signed-rank"
    unit, which = replicates(runs)
    lines = [f"Target average against ERM ({test_name} across {unit}{which}):"]
    gap = np.nan
    if oracle is not None and not oracle.dropna().empty:
        gap = oracle.mean() - erm.mean()
        shared = oracle.index.intersection(erm.index)
        _, half, _, _ = paired_difference(oracle[shared], erm[shared], confidence, "t")
        lines.append(f"- oracle headroom: oracle {100 * oracle.mean():.1f} − ERM {100 * erm.mean():.1f} = "
                     f"{100 * gap:+.1f} points (the oracle is ERM trained on the same source with the shortcut "
                     "decorrelated from the label)")
        if not headroom_is_real(gap, half):
            lines[-1] += (f"; too small to share out (shares need ≥ {100 * MIN_HEADROOM:g} points with a CI "
                          "above 0), so none is given")
            gap = np.nan
    for method, mask in _groups(runs):
        if method in (BASELINE, ORACLE):
            continue
        values = seeds.loc[(experiment, method, mask)]
        shared = values.index.intersection(erm.index)
        diff, half, n, p = paired_difference(values[shared], erm[shared], confidence, test)
        if n == 0:
            continue
        ci = "n/a" if np.isnan(half) else f"{100 * half:.1f}"
        above = int(((values[shared] - erm[shared]).dropna() > 0).sum())
        text = (f"- {method_label(method, mask)}: {100 * diff:+.1f} points (± {ci}, {confidence * 100:g}% CI; "
                f"{n} paired {unit}; p{fmt_p(p)}; above ERM on {above} of {n})")
        if np.isfinite(gap) and gap > 0:
            text += f"; recovers {100 * (values.mean() - erm.mean()) / gap:.0f}% of the oracle headroom"
        lines.append(text)
    return lines if len(lines) > 1 else []


# ---------------------------------------------------------------- renderers

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


def table1(runs: pd.DataFrame, fmt: str = "markdown", confidence: float = 0.95) -> str:
    """Render the paper's Table 1 (AUROC per domain × method) for ``runs``."""
    if fmt not in FORMATS:
        raise unknown_choice("table format", fmt, FORMATS)
    from dgx.report.render import render

    return render(build(runs, "1", confidence=confidence), fmt)


def table1_cells(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """The numeric cells of Table 1 (see :func:`cells`)."""
    return cells(runs, confidence)

