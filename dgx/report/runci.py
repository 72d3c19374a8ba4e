"""Per-run AUROC confidence intervals (``dgx report --run-ci``: DeLong or bootstrap) from the scores each run
saved (:mod:`dgx.report.run_files`); nothing here retrains or re-predicts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dgx.errors import DgxError
from dgx.report.render import BOOKTABS, TARGET_LEGEND, latex_comment, latex_escape
from dgx.report.run_files import read_scores
from dgx.stats import bootstrap_ci, delong_ci


def run_ci_frame(runs: pd.DataFrame, runs_dir: Path, method: str, confidence: float = 0.95) -> pd.DataFrame:
    """One row per (trial, domain): AUROC and its per-run interval."""
    if "run_id" not in runs.columns:
        raise DgxError("these runs carry no run ids (a W&B source?); per-run intervals need the Optuna storage "
                       "and the run folders")
    ci = delong_ci if method == "delong" else bootstrap_ci
    rows, missing = [], []
    for key, group in runs.groupby(["study", "trial"], sort=False):
        run_id = group["run_id"].iloc[0]
        scores = read_scores(runs_dir, run_id)
        if not scores:
            missing.append(f"{key[0]}#{key[1]}")
            continue
        for row in group.itertuples(index=False):
            if row.domain not in scores:
                continue
            labels, s = scores[row.domain]
            auc, low, high = ci(labels, s, confidence)
            rows.append({"study": key[0], "trial": key[1], "dataset": row.dataset, "method": row.method,
                         "mask": row.mask, "seed": row.seed, "domain": row.domain, "role": row.role,
                         "auroc": auc, "low": low, "high": high, "n_images": len(labels)})
    if not rows:
        raise DgxError(f"no saved scores for these runs under {Path(runs_dir) / 'runs'} (e.g. {', '.join(missing[:3])}); "
                       "set DGX_RUNS_DIR to the folder the sweep trained in")
    return pd.DataFrame(rows)


def run_ci_table(runs: pd.DataFrame, runs_dir: Path, method: str, fmt: str, confidence: float = 0.95) -> str:
    """The per-run intervals (:func:`run_ci_frame`) as text in ``fmt``."""
    frame = run_ci_frame(runs, runs_dir, method, confidence)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=1) + "\n"
    head = f"Per-run test AUROC (%) with {confidence * 100:g}% {'DeLong' if method == 'delong' else 'bootstrap'} intervals"
    return _latex(frame, head) if fmt == "latex" else _markdown(frame, head)


def _markdown(frame: pd.DataFrame, head: str) -> str:
    lines = [head, "", "| Study | Trial | Seed | Domain | AUROC | Interval | Images |", "|---|--:|--:|---|--:|---|--:|"]
    for r in frame.itertuples(index=False):
        name = f"_{r.domain}_" if r.role == "target" else r.domain
        lines.append(f"| {r.study} | {r.trial} | {r.seed} | {name} | {100 * r.auroc:.1f} | "
                     f"[{100 * r.low:.1f}, {100 * r.high:.1f}] | {r.n_images} |")
    return "\n".join(lines) + "\n"


def _latex(frame: pd.DataFrame, head: str) -> str:
    body = []
    for r in frame.itertuples(index=False):
        domain = latex_escape(r.domain)
        if r.role == "target":
            domain = rf"\underline{{{domain}}}"
        body.append(" & ".join([latex_escape(str(r.study)), str(r.trial), str(r.seed), domain,
                                f"{100 * r.auroc:.1f}", f"[{100 * r.low:.1f}, {100 * r.high:.1f}]",
                                str(r.n_images)]) + r" \\")
    return "\n".join([BOOKTABS, latex_comment(head), r"\begin{tabular}{llrlrlr}", r"\toprule",
                      r"Study & Trial & Seed & Domain & AUROC & Interval & Images \\", r"\midrule", *body,
                      r"\bottomrule", r"\end{tabular}", latex_comment(f"{TARGET_LEGEND}.")]) + "\n"
