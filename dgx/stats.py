"""Summary statistics for results across seeds.

The paper reports "mean ± 95% significance" over random seeds; with 3 to 10
seeds a normal approximation understates the interval, so we use Student's t.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy import stats


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean and t-interval half width of ``values``.

    Returns ``(mean, half_width, n)`` where ``half_width`` is
    ``t.ppf((1 + confidence) / 2, n - 1) * sd / sqrt(n)`` with the sample
    standard deviation (``ddof=1``). NaNs are dropped first (a missing result
    is not a zero), and ``n`` counts the values actually used. With ``n == 1``
    the half width is NaN (no spread can be estimated); with ``n == 0`` the
    mean is NaN too.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    arr = np.asarray(list(values), dtype=float)
    arr = arr[~np.isnan(arr)]
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(arr.mean())
    if n == 1:
        return mean, math.nan, 1
    sd = float(arr.std(ddof=1))
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean, half, n


def paired_difference(values: Iterable[float], baseline: Iterable[float], confidence: float = 0.95,
                      test: str = "t") -> tuple[float, float, int, float]:
    """Paired comparison across seeds: ``(mean difference, CI half width, n pairs, p-value)``.

    ``values`` and ``baseline`` are aligned (same seed at the same index); pairs
    with a NaN on either side are dropped. ``test`` is ``"t"`` (paired Student t,
    computed here from the differences) or ``"wilcoxon"`` (signed-rank, exact
    for small n). With fewer than 2 pairs the half width and p-value are NaN.
    """
    a, b = np.asarray(list(values), dtype=float), np.asarray(list(baseline), dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    d = (a - b)[~(np.isnan(a) | np.isnan(b))]
    mean, half, n = mean_ci(d, confidence)
    if n < 2:
        return mean, half, n, math.nan
    if test == "wilcoxon":
        if not np.any(d != 0):
            return mean, half, n, 1.0
        return mean, half, n, float(stats.wilcoxon(d).pvalue)
    if test != "t":
        raise ValueError(f"unknown paired test {test!r}; use 't' or 'wilcoxon'")
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return mean, half, n, (1.0 if mean == 0.0 else 0.0)
    t_stat = mean / (sd / math.sqrt(n))
    return mean, half, n, float(2.0 * stats.t.sf(abs(t_stat), n - 1))


def _placements(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components from mid-ranks (Sun & Xu 2014): V10 per positive, V01 per negative."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    pos, neg = scores[labels], scores[~labels]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("AUROC needs both classes")
    all_ranks = stats.rankdata(np.concatenate([pos, neg]))
    v10 = (all_ranks[:m] - stats.rankdata(pos)) / n  # share of negatives each positive beats (ties 1/2)
    v01 = 1.0 - (all_ranks[m:] - stats.rankdata(neg)) / m  # share of positives that beat each negative
    return v10, v01


def delong_ci(labels, scores, confidence: float = 0.95) -> tuple[float, float, float]:
    """AUROC with DeLong's asymptotic confidence interval: ``(auc, low, high)``, clipped to [0, 1]."""
    v10, v01 = _placements(np.asarray(labels), np.asarray(scores))
    auc = float(v10.mean())
    var = (v10.var(ddof=1) if len(v10) > 1 else 0.0) / len(v10) + (v01.var(ddof=1) if len(v01) > 1 else 0.0) / len(v01)
    z = float(stats.norm.ppf((1.0 + confidence) / 2.0))
    half = z * math.sqrt(var)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def bootstrap_ci(labels, scores, confidence: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float, float]:
    """AUROC with a stratified percentile bootstrap interval: ``(auc, low, high)``.

    Positives and negatives are resampled separately, so every replicate keeps
    the class balance and has an AUROC.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    v10, _ = _placements(labels, scores)
    auc = float(v10.mean())
    rng = np.random.default_rng(seed)
    pos, neg = scores[labels], scores[~labels]
    reps = np.empty(n_boot)
    for i in range(n_boot):
        p = pos[rng.integers(0, len(pos), len(pos))]
        q = neg[rng.integers(0, len(neg), len(neg))]
        ranks = stats.rankdata(np.concatenate([p, q]))
        reps[i] = (ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2) / (len(p) * len(q))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha])
    return auc, float(low), float(high)
