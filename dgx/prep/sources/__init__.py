"""Real chest X-ray sources: an explicit registry from name to a ``prepare`` function.

``prepare(root, *, metadata_only, seed, options)`` reads a dataset's metadata
(and, unless ``metadata_only``, checks its images under ``root``) and returns
``{"<domain>.<split>": manifest DataFrame}``. :func:`prepare_source` validates
and writes those manifests.

Adding a source: write ``dgx/prep/sources/<name>.py`` with a ``prepare``
function and add it below. ``siim`` is optional: its module defines
``SOURCE = Source(...)`` and is registered here when present.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dgx.errors import unknown_choice
from dgx.prep.manifest import write_manifests


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    # prepare(root, *, metadata_only, seed, options) -> {"<domain>.<split>": DataFrame}
    prepare: Callable[..., dict[str, pd.DataFrame]]


def _lazy(module: str) -> Callable[..., dict[str, pd.DataFrame]]:
    # Import a source's module only when it runs, so `dgx --help` stays fast.
    def prepare(root: Path | None, *, metadata_only: bool, seed: int, options: Mapping[str, str]):
        return importlib.import_module(f"dgx.prep.sources.{module}").prepare(
            root, metadata_only=metadata_only, seed=seed, options=dict(options))

    return prepare


SOURCES: dict[str, Source] = {
    "chestxray8": Source("chestxray8", "ChestX-ray8 (NIH) age target: SIIM-ACR images removed, ages >= median "
                         "(chestx-ray8-age.test)", _lazy("nih")),
    "chexpert": Source("chexpert", "CheXpert targets: hospital shift (chexpert.test) and hospital + age shift, "
                       "ages > median (chexpert-age.test)", _lazy("chexpert")),
    "mimic": Source("mimic", "MIMIC-CXR target: hospital shift (mimic-cxr.test); needs the credentialed CSVs",
                    _lazy("mimic")),
}


def _register_optional(module: str) -> None:
    name = f"dgx.prep.sources.{module}"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return  # the optional source is not installed
        raise  # the module exists but one of its imports is missing: show that
    source = getattr(mod, "SOURCE", None) or Source(module, (mod.__doc__ or module).strip().splitlines()[0], mod.prepare)
    SOURCES[source.name] = source


_register_optional("siim")


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise unknown_choice("source", name, SOURCES)
    return SOURCES[name]


def prepare_source(name: str, root: Path | None, out_dir: Path, *, metadata_only: bool = False, seed: int = 0,
                   options: Mapping[str, str] | None = None) -> dict[str, tuple[Path, pd.DataFrame]]:
    """Curate a source and write its manifests; return ``{key: (path, frame)}``."""
    source = get_source(name)
    frames = source.prepare(root, metadata_only=metadata_only, seed=seed, options=dict(options or {}))
    paths = write_manifests(frames, out_dir)
    return {key: (path, frames[key]) for key, path in zip(frames, paths)}


__all__ = ["SOURCES", "Source", "get_source", "prepare_source"]
