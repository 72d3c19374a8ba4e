"""How the report names and orders what was trained: method and mask display names, and the table order of rows."""

from __future__ import annotations

import pandas as pd

from dgx.methods import BASELINE, METHODS
from dgx.report.load import ORACLE

# Display names, in table order: every registered method (its own display_name), then the oracle row.
METHOD_NAMES = {**{name: cls.display_name for name, cls in METHODS.items()},
                ORACLE: f"Oracle ({METHODS[BASELINE].display_name}, shortcut decorrelated)"}
MASK_NAMES = {"abnormality": "Abnormality", "scaled": "Scaled abnormality", "periphery": "Lung periphery",
              "gaze": "Gaze", "none": "None"}
_METHOD_ORDER = tuple(METHOD_NAMES)
_MASK_ORDER = ("abnormality", "scaled", "periphery", "gaze", "none")


def method_label(method: str, mask: str) -> str:
    """Display name, e.g. "ERM" or "RRR (periphery)"."""
    name = METHOD_NAMES.get(method, method)
    maskless = method == ORACLE or (method in METHODS and not METHODS[method].uses_mask)
    return name if maskless and mask == "none" else f"{name} ({mask})"


def _rank(value: str, order: tuple[str, ...]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


def mask_rank(mask: str) -> tuple[int, str]:
    """Sort key of a mask kind: the paper's masks in their order, then any other by name."""
    return _rank(mask, _MASK_ORDER)


def method_masks(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """The (method, mask) pairs of ``runs`` in table order: methods as registered (ERM first), then masks."""
    pairs = runs[["method", "mask"]].drop_duplicates().itertuples(index=False)
    return sorted(pairs, key=lambda p: (_rank(p[0], _METHOD_ORDER), mask_rank(p[1])))
