"""Decoded-image cache: every image decoded once, resized, stored as memory-mapped uint8.

Layout of one cache folder ``<out>/<key>/`` (``key`` = hash of the manifests'
bytes, the size, the mask options and :data:`CACHE_VERSION`, so a changed
manifest or size builds a new folder and an unchanged one is reused)::
    images.npy           uint8 (N, size, size)  decoded as dgx decodes (dgx/prep/decode.py: ``stretch``)
    images_released.npy  uint8 (N, size, size)  decoded as the released code decoded (``released``; the
                         ``official`` profile's)
    labels.npy           int64 (N,)
    abnormality.npy      uint8 (N, size, size)  RLE any-pooled to size (or a mask PNG); ones for negatives
    scaled.npy           uint8 (N, size, size)  abnormality max-pooled to a scaled_grid grid and blown back up
    periphery.npy        uint8 (N, size, size)  lung periphery band united with the abnormality
    abnormality_released.npy  uint8 (N, size, size)  the full-size abnormality as the released code resized
                         it (anti-aliased bilinear resize, then > 0: a dilation); the ``official`` profile's
    periphery_released.npy  uint8 (N, size, size)  only with ``periphery_ids``: the periphery of the positives
                         whose lungs the authors annotated, ones elsewhere; the ``official`` profile's
    rows.csv             the manifest rows kept, in cache order
    index.json           version, size, mask options, per-manifest sha256 and row range, dropped images

Positives without an annotation and all negatives get all-ones masks (no constraint).

    gaze.npy             uint8 (N, size, size)  only with a gaze file: a positive's thresholded gaze heatmap

Lungs for the periphery come from, in order: the manifest's ``lung`` column
(a mask image relative to ``root``), ``lung_dir/<image stem>.png``,
torchxrayvision's ChestX-Det PSPNet when its weights are on disk (run on the
cached image, see :mod:`dgx.prep.lungseg`), else one fixed template: the mean
of torchxrayvision's 435 v7labs lung masks placed at a typical position. The
index records how many positives got each kind of lung.

The folder is built under a temporary name and renamed with ``os.replace``, so a
crash never leaves a half-written cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from dgx.data.cache import MASK_FILES, load_cache, read_index
from dgx.data.cache import sha256_file as _sha
from dgx.data.lungs import load_lung_atlas, place_lungs
from dgx.errors import DgxError
from dgx.masks import periphery_mask, scaled_mask
from dgx.masks.gaze import gaze_heatmap, gaze_mask, load_gaze
from dgx.masks.released import released_resize
from dgx.masks.rle import abnormality_mask, any_pool, load_rle_table
from dgx.prep import lungseg
from dgx.prep.curate import read_csv
from dgx.prep.decode import decode_both, decode_image
from dgx.prep.manifest import read_manifest
from dgx.runs import atomic_folder

log = logging.getLogger("dgx")

CACHE_VERSION = 4  # bump when decoding or mask building changes (3: abnormality_released, 4: images_released)
PERIPHERY_WIDTH = 0.15  # fraction of each lung's equivalent diameter (as decoy-cxr)
SCALED_CELL = 32  # px per scaled-mask grid cell at 224 px -> a 7x7 grid
GAZE_SIGMA = 3.0 / 128  # gaze smoothing, as a fraction of the image side (Figure 1's 3 px at 128 px)
GAZE_QUANTILE = 0.8  # a gaze mask keeps the pixels above this quantile of the image's heatmap
# Where the atlas template is placed: lungs' box centre (x, y) and extent, as image fractions.
TEMPLATE_CENTER, TEMPLATE_EXTENT = (0.5, 0.47), (0.78, 0.72)


def mask_options(size: int, lung_dir: Path | None = None, rle: Path | None = None, *,
                 lung_model: Path | None = None, gaze: Path | None = None,
                 gaze_quantile: float = GAZE_QUANTILE, periphery_ids: Path | None = None) -> dict[str, object]:
    """The options that shape the masks; part of the cache key and stored in the index."""
    options: dict[str, object] = {
        "periphery_width": PERIPHERY_WIDTH, "scaled_grid": max(1, round(size / SCALED_CELL)),
        "lung_dir": str(Path(lung_dir).resolve()) if lung_dir else "",
        "lung_model": _sha(Path(lung_model)) if lung_model else "",
        "rle": _sha(Path(rle)) if rle else "torchxrayvision"}
    if periphery_ids:
        options["periphery_ids"] = _sha(Path(periphery_ids))
    if gaze:
        if not 0 <= gaze_quantile < 1:
            raise DgxError(f"--gaze-quantile must be in [0, 1), got {gaze_quantile}")
        # gaze_rows: which fixation coordinate bins to rows; a cache built before the fix (rows from y) differs.
        options.update(gaze=_sha(Path(gaze)), gaze_sigma=GAZE_SIGMA * size, gaze_quantile=gaze_quantile,
                       gaze_rows="x")
    return options


def cache_key(manifests: list[Path], size: int, options: dict[str, object]) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "size": size, "masks": options}, sort_keys=True).encode())
    for path in sorted(manifests, key=lambda p: Path(p).name):
        h.update(Path(path).name.encode() + b"\0" + _sha(Path(path)).encode())
    return h.hexdigest()[:16]


def build_cache(manifests: list[Path], root: Path, size: int, out: Path, *,
                on_error: Literal["fail", "skip"] = "fail", lung_dir: Path | None = None,
                rle: Path | None = None, lung_model: Path | None = None, gaze: Path | None = None,
                gaze_quantile: float = GAZE_QUANTILE, periphery_ids: Path | None = None) -> Path:
    """Decode every image of ``manifests`` once into ``out/<key>/``; return that folder.

    An existing folder with the same key is returned as is. ``on_error="fail"``
    stops at the first unreadable image with a DgxError naming it; ``"skip"``
    logs a warning and drops it. ``lung_model`` is a local PSPNet checkpoint
    (:mod:`dgx.prep.lungseg`) used for positives without a user lung mask;
    ``gaze`` is the CXR-P gaze CSV, which adds a ``gaze`` mask kind; ``periphery_ids`` a CSV of the
    ``image_id`` s whose lungs the authors annotated (``lung_periphery_annotated_ids.csv``), which adds
    ``periphery_released``.
    """
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
    options = mask_options(size, lung_dir, rle, lung_model=lung_model, gaze=gaze, gaze_quantile=gaze_quantile,
                           periphery_ids=periphery_ids)
    annotated = _annotated_ids(periphery_ids) if periphery_ids else None
    key = cache_key(manifests, size, options)
    out = Path(out)
    final = out / key
    if (final / "index.json").is_file():
        log.info("cache %s is up to date", final)
        return final
    kinds = MASK_FILES + (("gaze",) if gaze else ()) + (("periphery_released",) if annotated is not None else ())
    out.mkdir(parents=True, exist_ok=True)
    rows = pd.concat([f.assign(_manifest=k) for k, f in frames.items()], ignore_index=True)
    job = _Job(root, size, options, on_error, lung_dir, rle, lung_model, _gaze_groups(gaze) if gaze else None)
    with atomic_folder(final) as tmp:  # a crash never leaves a half-written cache that looks complete
        arrays = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", np.uint8, (len(rows), size, size))
                  for name in ("images", "images_released", *kinds)}
        kept, dropped, lung_counts = _decode_and_mask(rows, arrays, job)
        if annotated is not None:
            _released_periphery(arrays, rows["image"].iloc[kept], annotated)
        _compact(tmp, arrays, len(kept), size)
        kept_rows = rows.iloc[kept].reset_index(drop=True)
        _write_index(tmp, kept_rows, frames, manifests, {
            "version": CACHE_VERSION, "key": key, "size": size, "n": len(kept), "mask_options": options,
            "masks": list(kinds), "lungs": lung_counts, "root": str(root.resolve()), "dropped": dropped})
    if dropped:
        log.warning("dropped %d unreadable image(s); see %s", len(dropped), final / "index.json")
    return final


@dataclass
class _Job:
    """What every row of a cache build needs."""
    root: Path
    size: int
    options: dict[str, object]
    on_error: str
    lung_dir: Path | None
    rle: Path | None
    lung_model: Path | None
    gaze_groups: dict[str, pd.DataFrame] | None


def _decode_and_mask(rows: pd.DataFrame, arrays: dict[str, np.ndarray], job: _Job) -> tuple[list, list, dict]:
    """Step 1 and 2: decode each row's image into the next free slot and build its masks.

    Returns (kept row indices, dropped image paths, how many positives' lungs came from where).
    """
    from dgx.progress import make_progress  # rich: only when a long loop shows progress

    kept, dropped, pending = [], [], []  # pending: cache rows whose lungs the model segments
    lung_counts = {"user": 0, "model": 0, "template": 0}
    table = None
    with make_progress(transient=True) as progress:
        task = progress.add_task(f"caching {len(rows)} images at {job.size} px", total=len(rows), status="")
        for i, row in enumerate(rows.itertuples(index=False)):
            progress.advance(task)
            try:
                image, released, shape = decode_both(job.root / row.image, job.size)
            except DgxError as exc:
                if job.on_error == "fail":
                    raise DgxError(f"{exc}; fix or remove it, or pass --skip-bad to drop such images") from None
                log.warning("skipping %s", exc)
                dropped.append(str(row.image))
                continue
            if row.abnormality.startswith("rle:") and table is None:
                table = load_rle_table(job.rle)
            j = len(kept)
            arrays["images"][j], arrays["images_released"][j] = image, released
            lung_from = _row_masks(arrays, j, row, shape, job, table)
            if lung_from == "model":
                pending.append(j)
            elif lung_from:
                lung_counts[lung_from] += 1
            kept.append(i)
        if pending:
            _segment_lungs(arrays, pending, job.lung_model, job.options, progress, lung_counts)
    if not kept:
        raise DgxError(f"none of the {len(rows)} images could be read under --root {job.root}; check --root")
    return kept, dropped, lung_counts


def _row_masks(arrays: dict[str, np.ndarray], j: int, row, shape: tuple[int, int], job: _Job, table) -> str:
    """Every mask kind of cache row ``j``; where its lungs came from ("user", "template", "model": still to
    segment), or "" for an image without a constraint."""
    size, options = job.size, job.options
    full = abnormality_full(row, shape, job.root, table)
    if job.gaze_groups is not None:
        arrays["gaze"][j] = gaze_for(row, job.gaze_groups, size, options)
    if full is None:  # a negative, or a positive without annotation: no constraint
        for kind in MASK_FILES:
            arrays[kind][j] = 1
        return ""
    abn = _resize_mask(full, size).astype(np.uint8)
    arrays["abnormality"][j] = abn
    arrays["abnormality_released"][j] = released_resize(full, size)
    arrays["scaled"][j] = _scaled(abn, options)
    lung = user_lung(row, shape, size, job.root, job.lung_dir)
    if lung is None and job.lung_model is not None:
        return "model"
    arrays["periphery"][j] = _periphery(lung if lung is not None else lung_template(size), abn, options)
    return "user" if lung is not None else "template"


def _annotated_ids(path: Path) -> set[str]:
    """The ``image_id`` column of a CSV (``lung_periphery_annotated_ids.csv``) as a set."""
    return set(read_csv(Path(path), "periphery ids", ["image_id"])["image_id"].astype(str).str.strip())


def _released_periphery(arrays: dict[str, np.ndarray], images: pd.Series, annotated: set[str]) -> None:
    """``periphery_released``: each kept row's periphery where its image id (the file's stem) is annotated,
    ones elsewhere (the released code had lung masks for those positives only)."""
    for j, image in enumerate(images):
        arrays["periphery_released"][j] = arrays["periphery"][j] if Path(str(image)).stem in annotated else 1


def _compact(folder: Path, arrays: dict[str, np.ndarray], kept: int, size: int) -> None:
    """Step 3: after dropped images (rare), rewrite every array to its first ``kept`` rows."""
    for name, arr in arrays.items():
        arr.flush()
        if kept < len(arr):
            small = np.lib.format.open_memmap(folder / f"{name}.part", "w+", np.uint8, (kept, size, size))
            small[:] = arr[:kept]
            small.flush()
            del small
            os.replace(folder / f"{name}.part", folder / f"{name}.npy")
    arrays.clear()


def _write_index(folder: Path, kept_rows: pd.DataFrame, frames: dict[str, pd.DataFrame], manifests: list[Path],
                 index: dict) -> None:
    """Step 4: labels, the kept rows and the index (per-manifest sha256 and row range)."""
    np.save(folder / "labels.npy", kept_rows["label"].to_numpy(dtype=np.int64))
    kept_rows.drop(columns="_manifest").to_csv(folder / "rows.csv", index=False)
    ranges, start = {}, 0
    for name in frames:  # rows are grouped by manifest, in order
        count = int((kept_rows["_manifest"] == name).sum())
        path = next(p for p in manifests if p.stem == name)
        ranges[name] = {"sha256": _sha(path), "start": start, "stop": start + count, "file": str(path.resolve())}
        start += count
    (folder / "index.json").write_text(json.dumps({**index, "manifests": ranges}, indent=1))


def _segment_lungs(arrays: dict[str, np.ndarray], pending: list[int], weights: Path, options: dict[str, object],
                   progress, counts: dict[str, int], chunk: int = 64) -> None:
    """Periphery masks for ``pending`` cache rows from lungs the PSPNet segments in their cached images."""
    segmenter = lungseg.LungSegmenter(weights)  # through the module: tests swap the segmenter
    size = arrays["images"].shape[-1]
    task = progress.add_task(f"segmenting lungs of {len(pending)} positives", total=len(pending), status="")
    for start in range(0, len(pending), chunk):
        rows = pending[start:start + chunk]
        for j, lung in zip(rows, segmenter(np.asarray(arrays["images"][rows]))):
            counts["model" if lung is not None else "template"] += 1
            lung = lung if lung is not None else lung_template(size)
            arrays["periphery"][j] = _periphery(lung, np.asarray(arrays["abnormality"][j]), options)
        progress.advance(task, len(rows))
    if counts["template"]:
        log.warning("lung segmentation failed on %d image(s) (lungs < 2%% of the image); used the atlas template",
                    counts["template"])


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image  # PIL: only to read or resize an image file


    if min(mask.shape) >= size:
        return any_pool(mask, size)  # never loses a thin region
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(im) >= 128


def _mask_file(path: Path, shape: tuple[int, int], what: str, image: str) -> np.ndarray:
    from PIL import Image  # PIL: only to read or resize an image file

    if not path.is_file():
        raise DgxError(f"{what} mask {path} for image {image} not found")
    with Image.open(path) as im:
        m = np.asarray(im.convert("L")) >= 128
    if m.shape != tuple(shape):
        raise DgxError(f"{what} mask {path} is {m.shape[1]}x{m.shape[0]} but image {image} is "
                       f"{shape[1]}x{shape[0]}; masks must match their image's size")
    return m


def abnormality_full(row, shape: tuple[int, int], root: Path,
                     table: dict[str, list[str]] | None) -> np.ndarray | None:
    """A positive row's abnormality mask at the image's own size, bool; None for negatives and unannotated positives."""
    ref = str(row.abnormality)
    if int(row.label) == 0 or not ref:
        return None
    if ref.startswith("rle:"):
        rles = table.get(ref[4:]) if table is not None else None
        if not rles:
            raise DgxError(f"abnormality {ref} of image {row.image} is not in the RLE table (or is negative)")
        try:
            return abnormality_mask(rles, height=shape[0], width=shape[1])
        except ValueError as exc:
            raise DgxError(f"abnormality {ref} does not fit image {row.image} ({shape[1]}x{shape[0]}): {exc}") from None
    return _mask_file(root / ref, shape, "abnormality", row.image)



def user_lung(row, shape: tuple[int, int], size: int, root: Path, lung_dir: Path | None) -> np.ndarray | None:
    """The row's lung mask from the manifest's ``lung`` column or ``lung_dir``, else None."""
    lung_ref = str(row.lung)
    if lung_ref:
        return _resize_mask(_mask_file(root / lung_ref, shape, "lung", row.image), size)
    if lung_dir is not None and (Path(lung_dir) / f"{Path(row.image).stem}.png").is_file():
        return _resize_mask(_mask_file(Path(lung_dir) / f"{Path(row.image).stem}.png", shape, "lung", row.image), size)
    return None


def _scaled(abn: np.ndarray, options: dict[str, object]) -> np.ndarray:
    return scaled_mask(abn, int(options["scaled_grid"]))


def _periphery(lung: np.ndarray, abn: np.ndarray, options: dict[str, object]) -> np.ndarray:
    return periphery_mask(lung, float(options["periphery_width"]), abn).astype(np.uint8)


def _gaze_groups(path: Path) -> dict[str, pd.DataFrame]:
    return {str(k): g for k, g in load_gaze(Path(path)).groupby("image_id", sort=False)}


def gaze_for(row, groups: dict[str, pd.DataFrame], size: int, options: dict[str, object]) -> np.ndarray:
    """A positive's gaze mask (its heatmap above the quantile); ones for negatives and images without gaze.

    Gaze is matched by image id: the image file's stem (SIIM's SOPInstanceUID).
    """
    fixations = groups.get(Path(str(row.image)).stem)
    if int(row.label) == 0 or fixations is None or not fixations["t"].sum() > 0:
        return np.ones((size, size), dtype=np.uint8)
    heat = gaze_heatmap(fixations, size, float(options["gaze_sigma"]))
    return gaze_mask(heat, float(options["gaze_quantile"])).astype(np.uint8)


@lru_cache(maxsize=4)
def lung_template(size: int) -> np.ndarray:
    """Mean of the lung atlas, thresholded at 0.5 and placed at a typical position (bool, read-only)."""
    atlas = load_lung_atlas(max(size, 64))
    mean = (atlas.mean(0) >= 0.5)[None]
    lung = place_lungs(mean, np.array([0]), np.array([TEMPLATE_CENTER]), np.array([TEMPLATE_EXTENT]),
                       np.array([0.0]), size)[0]
    lung.setflags(write=False)
    return lung


__all__ = ["build_cache", "load_cache", "read_index", "cache_key", "decode_image", "mask_options", "CACHE_VERSION"]
