"""What each selection rule picks on a search, and what the pick costs out of distribution (its regret).

For every method × mask searched, the grid point each rule of dgx/selection.py
selects from source validation, its target average, and the **selection
regret**: the target average of the best grid point minus that of the pick.
Targets enter this table only as the yardstick of the regret; no rule reads
them (the rules are the sweep's own code, :func:`dgx.selection.pick`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dgx.methods import METHODS
from dgx.report.formats import MISSING, Table
from dgx.report.labels import method_label
from dgx.selection import RULES, Candidate, pick

RULE_NAMES = {"val": "val (paper)", "swapped": "swapped", "shuffled": "shuffled", "lam-ci": "lam-ci"}


def _points(search: pd.DataFrame) -> pd.DataFrame:
    """One row per search trial: its λ, validation numbers and target average (every target needed)."""
    keys = ["dataset", "method", "mask", "seed", "study", "trial"]
    first = search.drop_duplicates(["study", "trial"]).set_index(["study", "trial"])
    targets = search[search["role"] == "target"]
    average = targets.groupby(["study", "trial"])["auroc"].agg(lambda v: v.mean() if v.notna().all() else np.nan)
    out = first.assign(target_avg=average).reset_index()
    return out[keys + ["run_id", "lam", "val_auroc", "val_auroc_low", "val_shuffled_auroc", "val_swapped_auroc",
                       "target_avg"]]


def selection_rows(search: pd.DataFrame, rules: tuple[str, ...] = RULES) -> list[dict]:
    """Per (dataset, method, mask, seed) searched over more than one point: every rule's pick and regret."""
    points = _points(search)
    rows = []
    for (dataset, method, mask, seed), group in points.groupby(["dataset", "method", "mask", "seed"], sort=False):
        if method not in METHODS or not METHODS[method].uses_mask:
            continue
        group = group.drop_duplicates("run_id").reset_index(drop=True)
        if len(group) < 2:
            continue
        candidates = [Candidate(key=str(r.run_id), lam=float(r.lam), val=float(r.val_auroc),
                                val_low=float(r.val_auroc_low), shuffled=float(r.val_shuffled_auroc),
                                swapped=float(r.val_swapped_auroc))
                      for r in group.itertuples()]
        best = group["target_avg"].max()
        row = {"dataset": dataset, "method": method, "mask": mask, "seed": int(seed), "points": len(group),
               "best_lam": float(group.loc[group["target_avg"].idxmax(), "lam"]) if np.isfinite(best) else math.nan,
               "best": best}
        for rule in rules:
            chosen = group.iloc[pick(candidates, rule)]
            row[f"{rule}_lam"], row[f"{rule}_target"] = float(chosen["lam"]), float(chosen["target_avg"])
            row[f"{rule}_regret"] = best - float(chosen["target_avg"])
            column = {"shuffled": "val_shuffled_auroc", "swapped": "val_swapped_auroc"}.get(rule)
            row[f"{rule}_available"] = column is None or bool(np.isfinite(group[column]).all())
        rows.append(row)
    return rows


def selection_table(search: pd.DataFrame, rules: tuple[str, ...] = RULES) -> Table | None:
    """The rules' picks as a table (None where no search had more than one grid point)."""
    rows = selection_rows(search, rules)
    if not rows:
        return None
    header = ["Dataset", "Method", "Points", "Best point (by targets)", *[f"{RULE_NAMES[r]}: pick, regret" for r in rules]]
    lines = []
    for r in rows:
        cells = [r["dataset"], method_label(r["method"], r["mask"]), str(r["points"]),
                 f"λ {r['best_lam']:g}: {_pct(r['best'])}"]
        for rule in rules:
            if not r[f"{rule}_available"]:
                cells.append(f"{MISSING} (not recorded)")
                continue
            cells.append(f"λ {r[f'{rule}_lam']:g}: {_pct(r[f'{rule}_target'])}, {_pct(r[f'{rule}_regret'])}")
        lines.append(cells)
    seeds = sorted({r["seed"] for r in rows})
    note = ("pick = the grid point the rule selects from source validation (dgx/selection.py; `dgx sweep --select "
            "RULE` retrains it over seeds), with its target average; regret = the best grid point's target "
            "average − the pick's, AUROC points; targets make this yardstick only and are never read by a rule; "
            f"search draw, seed {', '.join(map(str, seeds))}.")
    title = "Selection: what each source-only rule picks, and its regret on the targets"
    return Table(title, header, lines, [False] * len(lines), note, pd.DataFrame(rows))


def _pct(x: float) -> str:
    return MISSING if not np.isfinite(x) else f"{100 * x:.1f}"


__all__ = ["selection_rows", "selection_table"]
