"""Reading a decoded-image cache (built offline by :mod:`dgx.prep.cache_builder`): memory-mapped arrays and the index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dgx.errors import DgxError

MASK_FILES = ("abnormality", "scaled", "periphery", "abnormality_released")  # always; "gaze" with a gaze file


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """A cache's arrays, memory-mapped read-only (images, labels, each mask kind and, in a cache from
    version 4 on, ``images_released``: the images as the released code decoded them)."""
    path = Path(path)
    if not (path / "index.json").is_file():
        raise DgxError(f"{path} is not a dgx cache (no index.json); build it with `dgx data cache`")
    out = {"images": np.load(path / "images.npy", mmap_mode="r"), "labels": np.load(path / "labels.npy")}
    if (path / "images_released.npy").is_file():
        out["images_released"] = np.load(path / "images_released.npy", mmap_mode="r")
    for kind in read_index(path).get("masks", MASK_FILES):
        out[kind] = np.load(path / f"{kind}.npy", mmap_mode="r")
    return out


def read_index(path: Path) -> dict:
    return json.loads((Path(path) / "index.json").read_text())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise DgxError(f"cannot read {path}: {exc.strerror}") from None
    return h.hexdigest()



__all__ = ["load_cache", "read_index", "sha256_file", "MASK_FILES"]
