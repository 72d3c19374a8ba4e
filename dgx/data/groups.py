"""Per-image subgroup keys for worst-subgroup evaluation (``dgx report --by``).

A split may carry, per image, a short label for each subgrouping it knows:

- real data (from the manifest rows a cache keeps): ``age`` in bands
  (:data:`AGE_BANDS`), ``sex`` and ``view``, each ``unknown`` where the
  manifest leaves it empty;
- decoy-cxr (from what the generator drew): ``decoy`` (``token`` / ``no token``)
  and ``age``, which on synthetic data has no years and means the aged signs
  the age-shifted domains draw per image (``aged signs``: bullae or an
  emphysematous rim; ``no aged signs``).

The labels are coarse bands, never ages, IDs or names, and they stay on the
machine: training writes them next to ``scores.npz`` (:data:`dgx.runs.GROUPS`);
nothing here is logged to W&B.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEYS = ("age", "sex", "view", "decoy")
UNKNOWN = "unknown"
# Age bands in years: under 50, 50 to 70 inclusive, over 70 (the paper's age targets are patients over 70).
AGE_BANDS = ("<50", "50-70", ">70")


def age_bands(ages) -> np.ndarray:
    """Band label per age in years (missing or non-numeric -> ``unknown``)."""
    ages = pd.to_numeric(pd.Series(ages), errors="coerce").to_numpy(dtype=float)
    out = np.full(len(ages), UNKNOWN, dtype=object)
    out[ages < 50] = AGE_BANDS[0]
    out[(ages >= 50) & (ages <= 70)] = AGE_BANDS[1]
    out[ages > 70] = AGE_BANDS[2]
    return out.astype(str)


def _text(values) -> np.ndarray:
    series = pd.Series(values).fillna("").astype(str).str.strip()
    return series.where(series != "", UNKNOWN).to_numpy(dtype=str)


def from_rows(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The age/sex/view keys of manifest rows (columns absent from ``rows`` are skipped)."""
    out = {}
    if "age" in rows:
        out["age"] = age_bands(rows["age"])
    for key in ("sex", "view"):
        if key in rows:
            out[key] = _text(rows[key])
    return out


def decoy_groups(token: np.ndarray, aged: np.ndarray) -> dict[str, np.ndarray]:
    """decoy-cxr's keys from the generator's per-image draws."""
    return {"decoy": np.where(np.asarray(token, bool), "token", "no token"),
            "age": np.where(np.asarray(aged, bool), "aged signs", "no aged signs")}


def order(values) -> list[str]:
    """Group labels in display order: age bands first in their order, then sorted, ``unknown`` last."""
    values = list(dict.fromkeys(str(v) for v in values))
    known = [b for b in AGE_BANDS if b in values]
    rest = sorted(v for v in values if v not in known and v != UNKNOWN)
    return known + rest + ([UNKNOWN] if UNKNOWN in values else [])


__all__ = ["KEYS", "UNKNOWN", "AGE_BANDS", "age_bands", "from_rows", "decoy_groups", "order"]
