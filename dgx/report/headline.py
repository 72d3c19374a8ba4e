"""The comparisons a reader looks for first, under a Table 1 or 3: each method against ERM on the target
average, and the share of the oracle's headroom over ERM each method recovers."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dgx.methods import BASELINE
from dgx.report.formats import fmt_p
from dgx.report.labels import method_label, method_masks
from dgx.report.load import ORACLE
from dgx.report.trials import AVERAGE, per_seed, replicates
from dgx.stats import paired_difference

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
    for method, mask in method_masks(runs):
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

