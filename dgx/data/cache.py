"""Decoded-image cache: every image decoded once, resized, stored as memory-mapped uint8.

Layout of one cache folder ``<out>/<key>/`` (``key`` = hash of the manifests'
bytes, the size, the mask options and :data:`CACHE_VERSION`, so a changed
manifest or size builds a new folder and an unchanged one is reused)::

    images.npy           uint8 (N, size, size)
    labels.npy           int64 (N,)
    abnormality.npy      uint8 (N, size, size)  RLE any-pooled to size (or a mask PNG); ones for negatives
    scaled.npy           uint8 (N, size, size)  abnormality max-pooled to a scaled_grid grid and blown back up
    periphery.npy        uint8 (N, size, size)  lung periphery band united with the abnormality
    rows.csv             the manifest rows kept, in cache order
    index.json           version, size, mask options, per-manifest sha256 and row range, dropped images

Positives without an annotation and all negatives get all-ones masks (no constraint).

Lungs for the periphery come from, in order: the manifest's ``lung`` column
(a mask image relative to ``root``), ``lung_dir/<image stem>.png``, else one
fixed template: the mean of torchxrayvision's 435 v7labs lung masks placed at a
typical position. torchxrayvision's lung *segmentation model* would be better but
its weights are a download, unavailable offline; supply lung masks for real work.

The folder is built under a temporary name and renamed with ``os.replace``, so a
crash never leaves a half-written cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dgx.data.manifest import read_manifest
from dgx.errors import DgxError

log = logging.getLogger("dgx")

CACHE_VERSION = 1  # bump when decoding or mask building changes
MASK_FILES = ("abnormality", "scaled", "periphery")
PERIPHERY_WIDTH = 0.15  # fraction of each lung's equivalent diameter (as decoy-cxr)
SCALED_CELL = 32  # px per scaled-mask grid cell at 224 px -> a 7x7 grid
# Where the atlas template is placed: lungs' box centre (x, y) and extent, as image fractions.
TEMPLATE_CENTER, TEMPLATE_EXTENT = (0.5, 0.47), (0.78, 0.72)


def mask_options(size: int, lung_dir: Path | None = None, rle: Path | None = None) -> dict[str, object]:
    """The options that shape the masks; part of the cache key and stored in the index."""
    return {"periphery_width": PERIPHERY_WIDTH, "scaled_grid": max(1, round(size / SCALED_CELL)),
            "lung_dir": str(Path(lung_dir).resolve()) if lung_dir else "",
            "rle": _sha(Path(rle)) if rle else "torchxrayvision"}


def cache_key(manifests: list[Path], size: int, options: dict[str, object]) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "size": size, "masks": options}, sort_keys=True).encode())
    for path in sorted(manifests, key=lambda p: Path(p).name):
        h.update(Path(path).name.encode() + b"\0" + _sha(Path(path)).encode())
    return h.hexdigest()[:16]


def build_cache(manifests: list[Path], root: Path, size: int, out: Path, *,
                on_error: Literal["fail", "skip"] = "fail", lung_dir: Path | None = None,
                rle: Path | None = None) -> Path:
    """Decode every image of ``manifests`` once into ``out/<key>/``; return that folder.

    An existing folder with the same key is returned as is. ``on_error="fail"``
    stops at the first unreadable image with a DgxError naming it; ``"skip"``
    logs a warning and drops it.
    """
    from dgx.progress import make_progress

    if on_error not in ("fail", "skip"):
        raise DgxError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if size < 8:
        raise DgxError(f"cache size must be >= 8 px, got {size}")
    manifests = [Path(p) for p in manifests]
    if not manifests:
        raise DgxError("no manifests to cache; create them with `dgx data prepare SOURCE`")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DgxError(f"--root {root} is not a folder; point it at the dataset the manifests refer to")
    frames = {p.stem: read_manifest(p) for p in manifests}
    options = mask_options(size, lung_dir, rle)
    key = cache_key(manifests, size, options)
    out = Path(out)
    final = out / key
    if (final / "index.json").is_file():
        log.info("cache %s is up to date", final)
        return final
    out.mkdir(parents=True, exist_ok=True)
    rows = pd.concat([f.assign(_manifest=k) for k, f in frames.items()], ignore_index=True)
    n = len(rows)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=out))
    try:
        arrays = {"images": np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, size, size))}
        for kind in MASK_FILES:
            arrays[kind] = np.lib.format.open_memmap(tmp / f"{kind}.npy", "w+", np.uint8, (n, size, size))
        table = None
        kept, dropped = [], []
        with make_progress(transient=True) as progress:
            task = progress.add_task(f"caching {n} images at {size} px", total=n, status="")
            for i, row in enumerate(rows.itertuples(index=False)):
                path = root / row.image
                try:
                    image, shape = decode_image(path, size)
                except DgxError as exc:
                    if on_error == "fail":
                        raise DgxError(f"{exc}; fix or remove it, or pass --skip-bad to drop such images") from None
                    log.warning("skipping %s", exc)
                    dropped.append(str(row.image))
                    progress.advance(task)
                    continue
                if row.abnormality.startswith("rle:") and table is None:
                    from dgx.masks.rle import load_rle_table

                    table = load_rle_table(rle)
                j = len(kept)
                arrays["images"][j] = image
                masks = build_masks(row, shape, size, root, lung_dir, table, options)
                for kind in MASK_FILES:
                    arrays[kind][j] = masks[kind]
                kept.append(i)
                progress.advance(task)
        if not kept:
            raise DgxError(f"none of the {n} images could be read under --root {root}; check --root")
        for name, arr in arrays.items():
            arr.flush()
            if len(kept) < n:  # compact after drops (rare): rewrite the first len(kept) rows
                small = np.lib.format.open_memmap(tmp / f"{name}.part", "w+", np.uint8, (len(kept), size, size))
                small[:] = arr[: len(kept)]
                small.flush()
                del small
                os.replace(tmp / f"{name}.part", tmp / f"{name}.npy")
        del arrays
        kept_rows = rows.iloc[kept].reset_index(drop=True)
        np.save(tmp / "labels.npy", kept_rows["label"].to_numpy(dtype=np.int64))
        kept_rows.drop(columns="_manifest").to_csv(tmp / "rows.csv", index=False)
        ranges, start = {}, 0
        for name in frames:  # rows are grouped by manifest, in order
            count = int((kept_rows["_manifest"] == name).sum())
            path = next(p for p in manifests if p.stem == name)
            ranges[name] = {"sha256": _sha(path), "start": start, "stop": start + count, "file": str(path.resolve())}
            start += count
        index = {"version": CACHE_VERSION, "key": key, "size": size, "n": len(kept), "mask_options": options,
                 "root": str(root.resolve()), "manifests": ranges, "dropped": dropped}
        (tmp / "index.json").write_text(json.dumps(index, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same cache first
            if not (final / "index.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dropped:
        log.warning("dropped %d unreadable image(s); see %s", len(dropped), final / "index.json")
    return final


def load_cache(path: Path) -> dict[str, np.ndarray]:
    """A cache's arrays, memory-mapped read-only (images, labels and each mask kind)."""
    path = Path(path)
    if not (path / "index.json").is_file():
        raise DgxError(f"{path} is not a dgx cache (no index.json); build it with `dgx data cache`")
    out = {"images": np.load(path / "images.npy", mmap_mode="r"), "labels": np.load(path / "labels.npy")}
    for kind in MASK_FILES:
        out[kind] = np.load(path / f"{kind}.npy", mmap_mode="r")
    return out


def read_index(path: Path) -> dict:
    return json.loads((Path(path) / "index.json").read_text())


def decode_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Image file -> (uint8 (size, size), original (H, W)); DgxError naming the file when unreadable.

    DICOM: modality rescale applied, MONOCHROME1 inverted, min-max to 0-255.
    PNG/JPEG (8- or 16-bit): grayscale, min-max to 0-255 for 16-bit.
    The resize is bilinear to a square (SIIM images are square already).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DgxError(f"image {path} not found")
    try:
        if path.suffix.lower() == ".dcm":
            arr = _read_dicom(path)
        else:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("L") if im.mode not in ("I", "I;16", "I;16B", "F", "L") else im)
            arr = arr.astype(np.float64)
            if arr.max() > 255:
                arr = _to_uint8(arr)
    except DgxError:
        raise
    except Exception as exc:  # any decoder failure on a bad file
        raise DgxError(f"cannot decode image {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})") from None
    if arr.ndim != 2:
        raise DgxError(f"image {path} has shape {arr.shape}; expected one grayscale channel")
    img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    out = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0), dtype=np.uint8)
    return out, arr.shape


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError) as exc:
        raise DgxError(f"{path} is not a readable DICOM file ({type(exc).__name__})") from None
    arr = ds.pixel_array.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(-1)
    from pydicom.pixels import apply_rescale

    arr = np.asarray(apply_rescale(arr, ds), dtype=np.float64)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() - arr + arr.min()
    return _to_uint8(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from dgx.masks.rle import any_pool
    from PIL import Image

    if min(mask.shape) >= size:
        return any_pool(mask, size)  # never loses a thin region
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(im) >= 128


def _mask_file(path: Path, shape: tuple[int, int], what: str, image: str) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise DgxError(f"{what} mask {path} for image {image} not found")
    with Image.open(path) as im:
        m = np.asarray(im.convert("L")) >= 128
    if m.shape != tuple(shape):
        raise DgxError(f"{what} mask {path} is {m.shape[1]}x{m.shape[0]} but image {image} is "
                       f"{shape[1]}x{shape[0]}; masks must match their image's size")
    return m


def build_masks(row, shape: tuple[int, int], size: int, root: Path, lung_dir: Path | None,
                table: dict[str, list[str]] | None, options: dict[str, object]) -> dict[str, np.ndarray]:
    """The three mask kinds for one manifest row, uint8 (size, size)."""
    from dgx.masks import periphery_mask, scaled_mask
    from dgx.masks.rle import abnormality_mask

    ones = np.ones((size, size), dtype=np.uint8)
    ref = str(row.abnormality)
    if int(row.label) == 0 or not ref:
        return {kind: ones for kind in MASK_FILES}
    if ref.startswith("rle:"):
        rles = table.get(ref[4:]) if table is not None else None
        if not rles:
            raise DgxError(f"abnormality {ref} of image {row.image} is not in the RLE table (or is negative)")
        try:
            abn = abnormality_mask(rles, size, height=shape[0], width=shape[1])
        except ValueError as exc:
            raise DgxError(f"abnormality {ref} does not fit image {row.image} ({shape[1]}x{shape[0]}): {exc}") from None
    else:
        abn = _resize_mask(_mask_file(root / ref, shape, "abnormality", row.image), size)
    lung_ref = str(row.lung)
    if lung_ref:
        lung = _resize_mask(_mask_file(root / lung_ref, shape, "lung", row.image), size)
    elif lung_dir is not None and (Path(lung_dir) / f"{Path(row.image).stem}.png").is_file():
        lung = _resize_mask(_mask_file(Path(lung_dir) / f"{Path(row.image).stem}.png", shape, "lung", row.image), size)
    else:
        lung = lung_template(size)
    return {"abnormality": abn.astype(np.uint8),
            "scaled": scaled_mask(abn.astype(np.uint8), int(options["scaled_grid"])),
            "periphery": periphery_mask(lung, float(options["periphery_width"]), abn).astype(np.uint8)}


@lru_cache(maxsize=4)
def lung_template(size: int) -> np.ndarray:
    """Mean of the lung atlas, thresholded at 0.5 and placed at a typical position (bool, read-only)."""
    from dgx.data.lungs import load_lung_atlas, place_lungs

    atlas = load_lung_atlas(max(size, 64))
    mean = (atlas.mean(0) >= 0.5)[None]
    lung = place_lungs(mean, np.array([0]), np.array([TEMPLATE_CENTER]), np.array([TEMPLATE_EXTENT]),
                       np.array([0.0]), size)[0]
    lung.setflags(write=False)
    return lung


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise DgxError(f"cannot read {path}: {exc.strerror}") from None
    return h.hexdigest()


__all__ = ["build_cache", "load_cache", "read_index", "cache_key", "decode_image", "mask_options", "CACHE_VERSION"]
