"""Which trials a table counts (one per dataset, method, mask and seed), and their AUROCs seed by seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dgx.errors import DgxError
from dgx.report.labels import method_label

AVERAGE = "Target average"


def sources_targets(runs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The source domains and the target domains of ``runs``, each in order of first appearance."""
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
        sources, targets = sources_targets(exp)
        wide = exp.pivot_table(index=["dataset", "method", "mask", "seed"], columns="domain", values="auroc",
                               aggfunc="first", dropna=False)
        wide = wide.reindex(columns=sources + targets)
        # A seed missing any target has no average: averages over different target sets do not compare.
        wide[AVERAGE] = wide[targets].mean(axis=1, skipna=False) if targets else np.nan
        out.append(wide)
    return pd.concat(out)


def replicates(runs: pd.DataFrame | None) -> tuple[str, str]:
    """What n counts, and which draws: ("seeds", "") on real data; on generated data ("replicates", "; ..."),
    where a replicate is a data draw and an initialization (dgx.data.GENERATED)."""
    if runs is None or "draw" not in runs or not runs["draw"].notna().any():
        return "seeds", ""
    draws = sorted({int(d) for d in runs["draw"].dropna()})
    span = f"{draws[0]}–{draws[-1]}" if draws == list(range(draws[0], draws[-1] + 1)) else ", ".join(map(str, draws))
    return "replicates", f"; each its own data draw and initialization: draw{'s' if len(draws) > 1 else ''} {span}"
