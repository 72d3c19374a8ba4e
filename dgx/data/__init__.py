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
from dgx.data.real import OPTIONS, load_real
from dgx.errors import DgxError, unknown_choice


def _load_decoy(options: Mapping[str, str], image_size: int | None, data_dir: Path) -> Bundle:
    from dgx.data.decoy import load_decoy  # scipy, pandas: a dataset module loads when its data is asked for

    return load_decoy(check_options("decoy-cxr", options, image_size), data_dir)


def _load_mnist(options: Mapping[str, str], image_size: int | None, data_dir: Path) -> Bundle:
    from dgx.data.mnist import load_decoy_mnist  # scipy: a dataset module loads when its data is asked for

    return load_decoy_mnist(check_options("decoy-mnist", options, image_size), data_dir)


def _load_real(name: str) -> Callable[[Mapping[str, str], int | None, Path], Bundle]:
    def load(options: Mapping[str, str], image_size: int | None, data_dir: Path) -> Bundle:
        return load_real(name, options, image_size, data_dir)

    return load


# name -> loader(options, image_size, data_dir). Real data does not depend on the training seed: every
# seed of a configuration sees the same splits, as in the paper. Generated data does (see GENERATED).
DATASETS: dict[str, Callable[[Mapping[str, str], int | None, Path], Bundle]] = {
    "decoy-cxr": _load_decoy,
    "decoy-mnist": _load_mnist,  # Ross et al.'s Decoy-MNIST, binary: the methods' known answer (dgx/data/mnist.py)
    "cxr-p": _load_real("cxr-p"),  # real SIIM-ACR subset: needs `dgx data prepare` + `dgx data cache`
    "cxr-p-full": _load_real("cxr-p-full"),
}


# Data options that make a dataset's "oracle": the same source with its known shortcut
# decorrelated from the label (targets unchanged). Only synthetic data knows its shortcut.
ORACLES: dict[str, dict[str, str]] = {"decoy-cxr": {"decoy_strength": "0.5"}, "decoy-mnist": {"confound": "0.0"}}


def oracle_options(name: str, options: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...] | None:
    """``options`` with the dataset's oracle overrides (sorted KEY=VALUE pairs), or None if it has no oracle."""
    if name not in ORACLES:
        return None
    return tuple(sorted({**dict(options), **ORACLES[name]}.items()))


# Generated datasets, and the option that roots their randomness. On these a replicate is a data draw *and* an
# initialization: training seed k of a configuration whose root draw is S trains on draw S + k, so the spread
# over seeds (every table's CI and paired test) is the benchmark's, not that of one draw it was tuned on.
GENERATED: dict[str, str] = {"decoy-cxr": "seed", "decoy-mnist": "seed"}


def root_draw(name: str, options: Mapping[str, str] | None = None) -> int | None:
    """The root draw of a generated dataset's options (its default where unset), or None for real data."""
    if name not in GENERATED:
        return None
    key = GENERATED[name]
    values = dict(options or {})
    if key in values:
        return int(values[key])
    return int(dataset_options(name)[key])


def draw_options(name: str, options: Mapping[str, str] | None, seed: int) -> dict[str, str]:
    """The data options training seed ``seed`` loads: on generated data the root draw moved by ``seed``
    (see :data:`GENERATED`); real data's options unchanged."""
    values = dict(options or {})
    root = root_draw(name, values)
    if root is not None and seed:
        values[GENERATED[name]] = str(root + int(seed))
    return values


def load_dataset(name: str, options: Mapping[str, str] | None = None, image_size: int | None = None,
                 data_dir: Path = Path("data"), seed: int = 0) -> Bundle:
    """Load (building and caching if needed) a registered dataset, as training seed ``seed`` sees it
    (generated data: draw root + seed, :func:`draw_options`)."""
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    return DATASETS[name](draw_options(name, options, seed), image_size, Path(data_dir))


class Draws:
    """The bundle every training seed of one configuration trains on, each loaded once.

    Real data: one bundle for every seed. Generated data: draw root + seed (:func:`draw_options`); the last
    ``keep`` draws stay in memory (a sweep's seeds phase walks them in order).
    """

    def __init__(self, name: str, options: Mapping[str, str] | None, image_size: int | None, data_dir: Path,
                 loaded: Mapping[int, Bundle] | None = None, keep: int = 4) -> None:
        self.name, self.options, self.image_size, self.data_dir = name, dict(options or {}), image_size, data_dir
        self.generated, self.keep = name in GENERATED, keep
        self._bundles: dict[int, Bundle] = {self._key(s): b for s, b in (loaded or {}).items()}

    def _key(self, seed: int) -> int:
        return int(seed) if self.generated else 0

    def __call__(self, seed: int = 0) -> Bundle:
        key = self._key(seed)
        if key not in self._bundles:
            while len(self._bundles) >= self.keep:
                self._bundles.pop(next(iter(self._bundles)))
            self._bundles[key] = load_dataset(self.name, self.options, self.image_size, self.data_dir, key)
        return self._bundles[key]


def check_options(name: str, options: Mapping[str, str] | None = None, image_size: int | None = None, *,
                  complete: bool = True):
    """Check a dataset's name and options without loading anything: decoy-cxr's ``DecoyConfig``
    (whose ``n_train`` says how many images a training epoch has), or None for real data.

    ``complete=False`` checks each option's name and type only (the image size, which some checks
    depend on, may still come from a budget)."""
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    values = dict(options or {})
    if name in GENERATED:
        config = _config_class(name)
        if image_size is not None:
            values["image_size"] = str(image_size)
        coerced = _coerce(config, values, name)
        return config(**coerced) if complete else None

    for key in values:
        if key not in OPTIONS:
            raise unknown_choice(f"{name} option", key, OPTIONS)
    return None


def dataset_options(name: str) -> dict[str, object]:
    """The option names and defaults a dataset accepts (for --data-opt help)."""
    if name in GENERATED:
        return {f.name: f.default for f in dataclasses.fields(_config_class(name))}
    if name in ("cxr-p", "cxr-p-full"):
        return {"manifest_dir": "<DGX_DATA_DIR>/manifests", "cache_dir": "<DGX_DATA_DIR>/cache"}
    return {}


def generated_masks(name: str) -> tuple[str, ...]:
    """The mask kinds a generated dataset draws for its images."""
    if name == "decoy-mnist":
        from dgx.data.mnist import MASKS  # scipy: a dataset module loads when its data is asked for
    else:
        from dgx.data.decoy import MASKS  # scipy, pandas: a dataset module loads when its data is asked for
    return MASKS


def _config_class(name: str) -> type:
    """The dataclass of a generated dataset's options."""
    if name == "decoy-mnist":
        from dgx.data.mnist import DecoyMnistConfig  # scipy: a dataset module loads when its data is asked for

        return DecoyMnistConfig
    from dgx.data.decoy import DecoyConfig  # scipy, pandas: a dataset module loads when its data is asked for

    return DecoyConfig


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


__all__ = ["DATASETS", "GENERATED", "MASK_KINDS", "ORACLES", "Bundle", "Draws", "Split", "load_dataset", "check_options",
           "dataset_options", "draw_options", "generated_masks", "oracle_options", "root_draw"]
