"""Worst-subgroup evaluation (``dgx report --by KEY``), beyond the paper.

A domain's AUROC can hide a subgroup the model fails on: older patients, AP
films, or on decoy-cxr the images whose shortcut token disagrees with the
label. Each training saves, next to its ``scores.npz``, the per-image subgroup
keys of every scored split (``groups.npz``, :mod:`dgx.data.groups`); this
module scores each group from those two files. Nothing is retrained, and the
keys never leave the machine.

A group's AUROC is computed per run, then averaged over seeds like every other
cell. The worst group of a row is the lowest mean among groups with at least
:data:`MIN_CLASS` positives and negatives (smaller groups are shown, marked
``†``, but too noisy to be named worst); ``unknown`` is never a candidate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from dgx.data.groups import KEYS, UNKNOWN, order
from dgx.errors import DgxError, unknown_choice
from dgx.report.formats import MISSING, NOT_APPLICABLE, Table, fmt_cell
from dgx.report.labels import method_label, method_masks
from dgx.report.tables import table_title
from dgx.report.trials import select_trials
from dgx.runs import GROUPS, load_groups, load_scores, run_dir, scores_path
from dgx.stats import mean_ci

MIN_CLASS = 10  # positives and negatives a group needs to be named the worst
SMALL = "†"


def subgroup_frame(runs: pd.DataFrame, runs_dir: Path, key: str) -> pd.DataFrame:
    """One row per (trial, domain, group): AUROC of the selected checkpoint within the group, and its counts."""
    if key not in KEYS:
        raise unknown_choice("--by", key, KEYS)
    rows, no_files, recorded = [], [], {}
    for (study, trial), trial_rows in runs.groupby(["study", "trial"], sort=False):
        run_id = str(trial_rows["run_id"].iloc[0])
        folder = run_dir(runs_dir, run_id) if run_id else None
        scores = load_scores(scores_path(runs_dir, run_id)) if folder else {}
        groups = load_groups(folder / GROUPS) if folder else {}
        if not scores or not groups:
            no_files.append(f"{study}#{trial}")
            continue
        for row in trial_rows.itertuples(index=False):
            recorded.setdefault(row.dataset, set()).update(*(g.keys() for g in groups.values()))
            if row.domain not in scores or key not in groups.get(row.domain, {}):
                continue
            labels, score = scores[row.domain]
            values = groups[row.domain][key]
            if len(values) != len(labels):
                raise DgxError(f"{folder / GROUPS} holds {len(values)} {key} keys for {row.domain} but "
                               f"{scores_path(runs_dir, run_id).name} holds {len(labels)} scores; delete "
                               f"{folder / GROUPS} and rerun the sweep to rewrite it")
            for value in order(values):
                inside = values == value
                pos, neg = int(labels[inside].sum()), int((1 - labels[inside]).sum())
                auc = roc_auc_score(labels[inside], score[inside]) if pos and neg else np.nan
                rows.append({"dataset": row.dataset, "method": row.method, "mask": row.mask, "seed": row.seed,
                             "domain": row.domain, "role": row.role, "group": value, "auroc": float(auc),
                             "images": int(inside.sum()), "positives": pos, "negatives": neg})
    if not rows:
        if recorded and not any(key in keys for keys in recorded.values()):
            have = sorted(set().union(*recorded.values()))
            raise DgxError(f"these runs record no {key!r} subgroups ({', '.join(sorted(recorded))} records "
                           f"{', '.join(have) or 'none'}); pick one of those with --by")
        raise DgxError(f"no subgroup keys saved for these runs under {Path(runs_dir) / 'runs'} (e.g. "
                       f"{', '.join(no_files[:3])}); set DGX_RUNS_DIR to the folder the sweep trained in, or rerun "
                       "the sweep (finished runs are reused and gain their groups.npz)")
    return pd.DataFrame(rows)


def subgroup_tables(runs: pd.DataFrame, runs_dir: Path, key: str, confidence: float = 0.95) -> list[Table]:
    """Per dataset: domain × method rows, the domain AUROC, each group's AUROC and the worst group."""
    runs, notes = select_trials(runs)
    frame = subgroup_frame(runs, runs_dir, key)
    out = []
    for experiment in dict.fromkeys(frame["dataset"]):
        part = frame[frame["dataset"] == experiment]
        exp_runs = runs[runs["dataset"] == experiment]
        names = order(part["group"])
        header = ["Dataset", "Method", "All", *names, "Worst group"]
        rows, targets, data, previous = [], [], [], None
        for domain in dict.fromkeys(exp_runs["domain"]):
            role = exp_runs.loc[exp_runs["domain"] == domain, "role"].iloc[0]
            for method, mask in method_masks(exp_runs):
                mine = exp_runs[(exp_runs["domain"] == domain) & (exp_runs["method"] == method)
                                & (exp_runs["mask"] == mask)]
                mean, half, n = mean_ci(mine["auroc"], confidence)
                line = [domain if domain != previous else "", method_label(method, mask), fmt_cell(mean, half, n)]
                previous = domain
                cells = part[(part["domain"] == domain) & (part["method"] == method) & (part["mask"] == mask)]
                means = {}
                for name in names:
                    g = cells[cells["group"] == name]
                    if g.empty:
                        line.append(MISSING if cells.empty else NOT_APPLICABLE)
                        continue
                    m, h, k = mean_ci(g["auroc"], confidence)
                    small = int(g["positives"].min()) < MIN_CLASS or int(g["negatives"].min()) < MIN_CLASS
                    text = NOT_APPLICABLE if k == 0 else fmt_cell(m, h, k) + (SMALL if small else "")
                    line.append(f"{text} ({int(g['images'].iloc[0])})")
                    data.append({"dataset": experiment, "domain": domain, "role": role, "method": method,
                                 "mask": mask, "group": name, "mean": m, "half_width": h, "n": k,
                                 "images": int(g["images"].iloc[0]), "positives": int(g["positives"].iloc[0]),
                                 "negatives": int(g["negatives"].iloc[0]), "eligible": not small and name != UNKNOWN})
                    if k and not small and name != UNKNOWN:
                        means[name] = m
                worst = min(means, key=means.get) if len(means) >= 2 else None  # one group: nothing to rank
                line.append(MISSING if cells.empty else NOT_APPLICABLE if worst is None else
                            f"{worst}: {100 * means[worst]:.1f} ({100 * (means[worst] - mean):+.1f})")
                rows.append(line)
                targets.append(role == "target")
        note = (f"_italic_ = OOD target domain; cells: AUROC (%) within the group, mean ± "
                f"{confidence * 100:g}% CI across seeds (images in the group); {SMALL} = fewer than {MIN_CLASS} "
                f"positives or negatives, never named worst; {MISSING} = not run; {NOT_APPLICABLE} = not "
                f"applicable (the group has one class or no images here); Worst group: the lowest group AUROC "
                f"and its gap to All, among at least two groups; {key} groups from the local groups.npz of each run"
                + "".join(f"; {n}" for n in notes) + ".")
        title = table_title(f"Subgroups by {key}", runs, experiment, confidence)
        out.append(Table(title, header, rows, targets, note, pd.DataFrame(data)))
    return out


__all__ = ["MIN_CLASS", "subgroup_frame", "subgroup_tables"]
