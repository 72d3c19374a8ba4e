"""Optuna studies: search spaces (sweeps/*.yaml), storages, the sweep driver.

The names below load on first use (PEP 562), so reading a budget or opening a
storage does not import torch: the commands check their input before that.
"""

import importlib

_HOMES = {"Budget": "dgx.space", "load_budget": "dgx.space", "open_storage": "dgx.storage",
          "SweepPlan": "dgx.sweep.plan", "run_sweep": "dgx.sweep.study"}

__all__ = ["Budget", "SweepPlan", "load_budget", "open_storage", "run_sweep"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
