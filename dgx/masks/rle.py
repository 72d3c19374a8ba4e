"""SIIM-ACR pneumothorax run-length masks (the abnormality annotations).

torchxrayvision ships the SIIM training RLE table. Its encoding is *relative*
(each run start is an offset from the end of the previous run) and
column-major: the flat pixel order walks down each column first. So decoding
fills a flat array, reshapes it to (width, height) and transposes it back to
image (row, col) order. Images annotated with several regions have one row per
region; their mask is the union. ``-1`` marks an image without pneumothorax.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from dgx.errors import DgxError

RLE_FILE = "siim-pneumothorax-train-rle.csv.gz"
SIIM_SIZE = 1024  # every SIIM-ACR image is 1024 x 1024
NEGATIVE = "-1"


def siim_rle_path() -> Path:
    """The RLE table shipped with torchxrayvision (raises DgxError if absent)."""
    # find_spec locates the package without importing it (its import pulls in torch: ~3 s).
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or spec.origin is None:
        raise DgxError("SIIM abnormality masks need torchxrayvision; pip install torchxrayvision")
    path = Path(spec.origin).parent / "data" / RLE_FILE
    if not path.is_file():
        raise DgxError(f"SIIM RLE table not found at {path}; reinstall torchxrayvision (>=1.2) which ships {RLE_FILE}")
    return path


def load_rle_table(path: Path | None = None) -> dict[str, list[str]]:
    """ImageId -> its RLE strings (one per annotated region; empty list for negatives)."""
    import pandas as pd  # pandas: only when metadata tables are read

    path = Path(path) if path is not None else siim_rle_path()
    if not path.is_file():
        raise DgxError(f"RLE table not found at {path}; pass the SIIM train-rle CSV (ImageId, EncodedPixels)")
    # dtype=str keeps "-1" a string; the shipped header has a leading space.
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.columns = [c.strip() for c in df.columns]
    missing = {"ImageId", "EncodedPixels"} - set(df.columns)
    if missing:
        raise DgxError(f"{path} lacks column(s) {', '.join(sorted(missing))}; expected ImageId, EncodedPixels")
    table: dict[str, list[str]] = {}
    for image_id, rle in zip(df["ImageId"].str.strip(), df["EncodedPixels"].str.strip()):
        runs = table.setdefault(image_id, [])
        if rle and rle != NEGATIVE:
            runs.append(rle)
    return table


def _runs(rle: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute (start, end) flat indices of each run, validated against ``n`` pixels."""
    try:
        values = np.array(rle.split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"RLE must be whitespace-separated integers, got {rle[:40]!r}") from None
    if len(values) % 2 or (values < 0).any():
        raise ValueError(f"RLE must hold non-negative (start, length) pairs, got {len(values)} numbers")
    rel, lengths = values[0::2], values[1::2]
    # start_i = sum of all previous offsets and lengths + its own offset.
    starts = np.cumsum(rel) + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = starts + lengths
    if len(ends) and ends[-1] > n:
        raise ValueError(f"RLE runs past the image: ends at pixel {ends[-1]} of {n}")
    return starts, ends


def _decode_colmajor(rles: list[str], height: int, width: int) -> np.ndarray:
    """Union of RLE rows as a C-contiguous (width, height) array, i.e. the transposed mask."""
    flat = np.zeros(height * width, dtype=bool)
    for rle in rles:
        if rle.strip() in ("", NEGATIVE):
            continue
        for start, end in zip(*_runs(rle, flat.size)):
            flat[start:end] = True
    # Column-major: the flat index is col * height + row.
    return flat.reshape(width, height)


def decode_rle(rle: str, height: int = SIIM_SIZE, width: int = SIIM_SIZE) -> np.ndarray:
    """One SIIM RLE string -> bool (height, width) mask in image (row, col) order."""
    return _decode_colmajor([rle], height, width).T


def encode_rle(mask: np.ndarray) -> str:
    """Inverse of :func:`decode_rle`: bool (H, W) -> relative column-major RLE ("-1" if empty)."""
    flat = np.asarray(mask, dtype=bool).T.ravel()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat.view(np.int8), [0]])))
    if len(edges) == 0:
        return NEGATIVE
    starts, ends = edges[0::2], edges[1::2]
    gaps = starts - np.concatenate([[0], ends[:-1]])  # offsets from the previous run's end
    return " ".join(f"{g} {l}" for g, l in zip(gaps, ends - starts))


def any_pool(mask: np.ndarray, size: int) -> np.ndarray:
    """Shrink a bool (H, W) mask to (size, size): a cell is set if any pixel in it is.

    Any-pooling never loses a small region (nearest-neighbour could skip a thin
    pneumothorax rim entirely); it grows areas by under one cell, which is
    negligible for 1024 -> 128 (8 x 8 cells). Cells split sizes that do not
    divide evenly as adaptive max-pooling does.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    if not 1 <= size <= min(h, w):
        raise ValueError(f"size must be in [1, {min(h, w)}], got {size}")
    starts_y = np.searchsorted((np.arange(h) * size) // h, np.arange(size))
    starts_x = np.searchsorted((np.arange(w) * size) // w, np.arange(size))
    return np.logical_or.reduceat(np.logical_or.reduceat(m, starts_y, axis=0), starts_x, axis=1)


def abnormality_mask(rles: list[str], size: int | None = None, height: int = SIIM_SIZE,
                     width: int = SIIM_SIZE) -> np.ndarray:
    """Union of an image's RLE rows, optionally any-pooled to (size, size); empty for negatives."""
    # Work in the decoded (column-major) layout and transpose once at the end:
    # pooling commutes with the transpose and runs ~3x faster on contiguous memory.
    cols = _decode_colmajor(rles, height, width)
    return (cols if size is None else any_pool(cols, size)).T
