"""Datasets: an explicit registry from name to loader.

Every loader returns a :class:`~dgx.data.base.Bundle`: a source domain with
train/val/test splits plus OOD target domains (evaluation only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from dgx.data.base import MASK_KINDS, Bundle, Split
from dgx.errors import DgxError, unknown_choice


def _load_decoy(options: Mapping[str, str], image_size: int | None, data_dir: Path) -> Bundle:
    from dgx.data.decoy import load_decoy

    return load_decoy(check_options("decoy-cxr", options, image_size), data_dir)


def _load_real(name: str) -> Callable[[Mapping[str, str], int | None, Path], Bundle]:
    def load(options: Mapping[str, str], image_size: int | None, data_dir: Path) -> Bundle:
        from dgx.data.real import load_real

        return load_real(name, options, image_size, data_dir)

    return load


# name -> loader(options, image_size, data_dir). The data do not depend on the
# training seed: every seed of a configuration sees the same splits, as in the paper.
DATASETS: dict[str, Callable[[Mapping[str, str], int | None, Path], Bundle]] = {
    "decoy-cxr": _load_decoy,
    "cxr-p": _load_real("cxr-p"),  # real SIIM-ACR subset: needs `dgx data prepare` + `dgx data cache`
    "cxr-p-full": _load_real("cxr-p-full"),
}


# Data options that make a dataset's "oracle": the same source with its known shortcut
# decorrelated from the label (targets unchanged). Only synthetic data knows its shortcut.
ORACLES: dict[str, dict[str, str]] = {"decoy-cxr": {"decoy_strength": "0.5"}}


def oracle_options(name: str, options: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...] | None:
    """``options`` with the dataset's oracle overrides (sorted KEY=VALUE pairs), or None if it has no oracle."""
    if name not in ORACLES:
        return None
    return tuple(sorted({**dict(options), **ORACLES[name]}.items()))


def load_dataset(name: str, options: Mapping[str, str] | None = None, image_size: int | None = None,
                 data_dir: Path = Path("data")) -> Bundle:
    """Load (building and caching if needed) a registered dataset."""
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    return DATASETS[name](options or {}, image_size, Path(data_dir))


def check_options(name: str, options: Mapping[str, str] | None = None, image_size: int | None = None, *,
                  complete: bool = True):
    """Check a dataset's name and options without loading anything: decoy-cxr's ``DecoyConfig``
    (whose ``n_train`` says how many images a training epoch has), or None for real data.

    ``complete=False`` checks each option's name and type only (the image size, which some checks
    depend on, may still come from a budget)."""
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    values = dict(options or {})
    if name == "decoy-cxr":
        from dgx.data.decoy import DecoyConfig

        if image_size is not None:
            values["image_size"] = str(image_size)
        coerced = _coerce(DecoyConfig, values, name)
        return DecoyConfig(**coerced) if complete else None
    from dgx.data.real import OPTIONS

    for key in values:
        if key not in OPTIONS:
            raise unknown_choice(f"{name} option", key, OPTIONS)
    return None


def dataset_options(name: str) -> dict[str, object]:
    """The option names and defaults a dataset accepts (for --data-opt help)."""
    if name == "decoy-cxr":
        from dgx.data.decoy import DecoyConfig

        return {f.name: f.default for f in dataclasses.fields(DecoyConfig)}
    if name in ("cxr-p", "cxr-p-full"):
        return {"manifest_dir": "<DGX_DATA_DIR>/manifests", "cache_dir": "<DGX_DATA_DIR>/cache"}
    return {}


def _coerce(cls: type, values: Mapping[str, str], dataset: str) -> dict[str, object]:
    """Parse KEY=VALUE strings into a dataclass's field types, with one-line errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, object] = {}
    for key, raw in values.items():
        if key not in fields:
            raise unknown_choice(f"{dataset} option", key, fields)
        kind = type(fields[key].default)
        try:
            if kind is bool:
                if str(raw).lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                out[key] = str(raw).lower() in ("true", "1")
            else:
                out[key] = kind(raw)
                if kind is float and not math.isfinite(out[key]):
                    raise ValueError(raw)
        except (TypeError, ValueError):
            raise DgxError(f"{dataset} option {key}={raw!r} is not a valid {'finite ' if kind is float else ''}"
                           f"{kind.__name__}; pass e.g. --data-opt {key}={fields[key].default}") from None
    return out


__all__ = ["DATASETS", "MASK_KINDS", "ORACLES", "Bundle", "Split", "load_dataset", "check_options", "dataset_options",
           "oracle_options"]
