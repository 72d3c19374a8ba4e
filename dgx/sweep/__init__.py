"""Optuna studies: search spaces (sweeps/*.yaml), storages, the sweep driver."""

from dgx.sweep.space import Budget, load_budget
from dgx.sweep.storage import open_storage
from dgx.sweep.study import SweepPlan, run_sweep

__all__ = ["Budget", "SweepPlan", "load_budget", "open_storage", "run_sweep"]
