"""Measurements behind the paper's figures, from the real reference data.

Figure 1 (paper §5) averages radiologist gaze over the CXR-P training images
and the pneumothorax annotations over its positives, to show that the relevant
region is the lung periphery, most of all the apices. :func:`figure1_data`
computes both maps plus the numbers the figure supports; plotting lives in
:mod:`dgx.analyze.figures`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dgx.config import get_settings
from dgx.data.lungs import load_lung_atlas, load_lung_boxes, place_lungs
from dgx.errors import DgxError
from dgx.masks.gaze import gaze_heatmaps, load_gaze
from dgx.masks.rle import abnormality_mask, any_pool, load_rle_table

SPLITS_FILE = "cxr_p_splits.csv"
GAZE_FILE = "cxr_p_gaze.csv.gz"
SOURCE_SPLITS = ("train", "val")  # CXR-P train+val: the paper's "training split" (1,170 images)


def default_reference_dir() -> Path | None:
    """``$DGX_REFERENCE_DIR`` if set, else None (the data are user-supplied)."""
    env = get_settings().reference_dir
    return Path(env) if env else None


def check_reference_dir(reference: Path | None) -> Path:
    """The folder holding the splits and gaze CSVs, or a one-line DgxError on how to pass it."""
    if reference is None:
        raise DgxError("no reference data folder given; pass --reference DIR (holding "
                       f"{SPLITS_FILE} and {GAZE_FILE}) or set DGX_REFERENCE_DIR")
    reference = Path(reference)
    for name in (SPLITS_FILE, GAZE_FILE):
        if not (reference / name).is_file():
            raise DgxError(f"{reference / name} not found; pass --reference DIR with {SPLITS_FILE} and {GAZE_FILE}")
    return reference


def upper_half_fraction(heat: np.ndarray) -> float:
    """Share of a (H, W) map's mass in the top half of the image (rows < H/2)."""
    heat = np.asarray(heat, dtype=float)
    h = heat.shape[0]
    # An odd middle row is split evenly between the halves.
    top = heat[: h // 2].sum() + (0.5 * heat[h // 2].sum() if h % 2 else 0.0)
    return float(top / heat.sum())


def lung_template(size: int, cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the atlas lung masks, each placed at its own measured box: float (size, size), and the boxes.

    There are no SIIM pixels here to average (the paper overlays on the mean
    image), so the real lung outlines stand in for the anatomy. Each mask goes
    back to the box (x0, x1, y0, y1) its lungs filled in its own image, as
    fractions of that image's sides (:func:`dgx.data.lungs.load_lung_boxes`), so
    the template is measured from the atlas alone, never fitted to the maps drawn
    over it. ``cache_dir`` caches the decoded atlas (as
    :func:`dgx.data.lungs.load_lung_atlas`).
    """
    atlas = load_lung_atlas(size, cache_dir)
    boxes = load_lung_boxes(cache_dir)
    n = len(atlas)
    center = np.column_stack([boxes[:, :2].mean(1), boxes[:, 2:].mean(1)])
    extent = np.column_stack([boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]])
    return place_lungs(atlas, np.arange(n), center, extent, np.zeros(n), size).mean(0), boxes


@dataclass
class Figure1:
    """Both panels of Figure 1 and the facts measured from them."""

    gaze: np.ndarray  # float (S, S): mean per-image gaze heatmap (each sums to 1)
    abnormality: np.ndarray  # float (S, S): fraction of positives annotated at each pixel
    template: np.ndarray  # float (S, S): mean lung mask, the backdrop
    template_box: tuple[float, float, float, float]  # mean measured lung box (x0, x1, y0, y1), image fractions
    n_atlas: int  # atlas masks averaged into the template
    n_gaze: int  # CXR-P train+val images with gaze
    n_positive: int  # CXR-P train+val positives with an RLE mask
    abnormality_upper: float  # share of abnormality mass in the top half (full 1024 px resolution)
    gaze_upper: float  # share of gaze dwell in the top half
    gaze_abnormality_r: float  # pixel correlation of the mean gaze map with the mean abnormality map


def figure1_data(reference: Path, size: int = 128, sigma: float = 3.0, rle_path: Path | None = None,
                 atlas_cache: Path | None = None) -> Figure1:
    """Average gaze and abnormality maps over CXR-P train+val (``sigma`` in output pixels).

    The backdrop is :func:`lung_template`: the atlas masks at their measured
    positions, independent of both maps.
    """
    reference = check_reference_dir(reference)
    splits = pd.read_csv(reference / SPLITS_FILE)
    source = splits[splits["split"].isin(SOURCE_SPLITS)]
    gaze = load_gaze(reference / GAZE_FILE)
    have_gaze = set(gaze["image_id"])
    gaze_ids = [i for i in dict.fromkeys(source["image_id"]) if i in have_gaze]
    if not gaze_ids:
        raise DgxError(f"no CXR-P train/val image in {reference / SPLITS_FILE} has gaze in {reference / GAZE_FILE}")
    heat = gaze_heatmaps(gaze, gaze_ids, size, sigma).mean(0)

    table = load_rle_table(rle_path)
    pos_ids = list(dict.fromkeys(source.loc[source["label"] == 1, "image_id"]))
    rles = [table[i] for i in pos_ids if table.get(i)]
    if not rles:
        raise DgxError(f"none of the {len(pos_ids)} CXR-P train/val positives has an RLE mask; check the RLE table")
    # Sum at full resolution for the measured fraction; pool each mask for the picture.
    full = np.zeros((1024, 1024), dtype=np.int32)
    small = np.zeros((size, size), dtype=float)
    for r in rles:
        m = abnormality_mask(r)
        full += m
        small += any_pool(m, size)
    small /= len(rles)
    template, boxes = lung_template(size, atlas_cache)
    return Figure1(
        gaze=heat,
        abnormality=small,
        template=template,
        template_box=tuple(float(v) for v in boxes.mean(0)),
        n_atlas=len(boxes),
        n_gaze=len(gaze_ids),
        n_positive=len(rles),
        abnormality_upper=upper_half_fraction(full),
        gaze_upper=upper_half_fraction(heat),
        gaze_abnormality_r=float(np.corrcoef(heat.ravel(), small.ravel())[0, 1]),
    )
