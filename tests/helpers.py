"""Tiny configurations that train in seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

from dgx.data import load_dataset
from dgx.spec import TrainConfig

# The limit for waiting on a subprocess or a condition: a guard against a real hang (a process that never exits
# would stall CI forever), never a performance check. Far above what any wait takes on a machine loaded by
# other jobs (the slowest, a bench or a 3-worker sweep, take 1-3 minutes at load 8-12 on 2 cores).
HANG_S = 1800

TINY_DATA = {"n_train": "96", "n_val": "64", "n_test": "64", "n_target": "48"}
TINY_OPTS = tuple(sorted(TINY_DATA.items()))


def tiny_config(**overrides) -> TrainConfig:
    base = dict(method="erm", mask="none", dataset="decoy-cxr", data_options=TINY_OPTS, image_size=32,
                model="resnet18-w16", weights="none", lr=1e-3, epochs=2, batch_size=16)
    base.update(overrides)
    return TrainConfig(**base)


def tiny_data(tmp_path: Path, cfg: TrainConfig):
    return load_dataset(cfg.dataset, dict(cfg.data_options), cfg.image_size, tmp_path / "data")


def cli_data_args() -> list[str]:
    args = []
    for key, value in TINY_DATA.items():
        args += ["--data-opt", f"{key}={value}"]
    return args + ["--image-size", "32", "--model", "resnet18-w16", "--weights", "none"]


def reference_dir(needed: str = "cxr_p_splits.csv") -> Path:
    """../shared/reference beside the checkout, else $DGX_REFERENCE_DIR; skip the test where absent."""
    import os

    import pytest

    here = Path(__file__).resolve().parents[2] / "shared" / "reference"
    path = here if here.is_dir() else Path(os.environ.get("DGX_REFERENCE_DIR", "/nonexistent"))
    if not (path / needed).is_file():
        pytest.skip(f"reference file {needed} not available (../shared/reference or $DGX_REFERENCE_DIR)")
    return path


def named_study(url: str, base: str, suffix: str = ""):
    """The study of ``url`` that `dgx sweep` named ``base`` + its override tag (``-oHASH``, present when flags
    such as :func:`cli_data_args` changed the budget's settings) + ``suffix`` (``.seeds``, ``-oracle``)."""
    import re

    import optuna

    pattern = re.escape(base) + r"(-o[0-9a-f]{6})?" + re.escape(suffix)
    names = [n for n in optuna.get_all_study_names(url) if re.fullmatch(pattern, n)]
    assert len(names) == 1, (base, suffix, optuna.get_all_study_names(url))
    return optuna.load_study(study_name=names[0], storage=url)
