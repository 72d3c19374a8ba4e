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

from dgx.errors import DgxError

SPLITS_FILE = "cxr_p_splits.csv"
GAZE_FILE = "cxr_p_gaze.csv.gz"
SOURCE_SPLITS = ("train", "val")  # CXR-P train+val: the paper's "training split" (1,170 images)
# Share of the abnormality mass along each axis left outside the template box.
_BOX_TAIL = 0.01


def default_reference_dir() -> Path | None:
    """``$DGX_REFERENCE_DIR`` if set, else None (the data are user-supplied)."""
    from dgx.config import get_settings

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


def mass_box(heat: np.ndarray, tail: float = _BOX_TAIL) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) image fractions holding all but ``tail`` of the mass at each end of each axis."""
    heat = np.asarray(heat, dtype=float)
    out = []
    for axis in (0, 1):  # columns (x) first, then rows (y)
        cdf = np.cumsum(heat.sum(axis)) / heat.sum()
        n = len(cdf)
        out += [np.searchsorted(cdf, tail) / n, (np.searchsorted(cdf, 1 - tail) + 1) / n]
    return tuple(out)  # type: ignore[return-value]


def lung_template(size: int, box: tuple[float, float, float, float], cache_dir: Path | None = None) -> np.ndarray:
    """Mean of the 435 atlas lung masks stretched to ``box`` (x0, x1, y0, y1): float (size, size).

    There are no SIIM pixels here to average (the paper overlays on the mean
    image), so the real lung outlines stand in for the anatomy. ``cache_dir``
    caches the decoded atlas (as :func:`dgx.data.lungs.load_lung_atlas`).
    """
    from dgx.data.lungs import load_lung_atlas, place_lungs

    atlas = load_lung_atlas(size, cache_dir)
    x0, x1, y0, y1 = box
    n = len(atlas)
    center = np.tile([(x0 + x1) / 2, (y0 + y1) / 2], (n, 1))
    extent = np.tile([x1 - x0, y1 - y0], (n, 1))
    return place_lungs(atlas, np.arange(n), center, extent, np.zeros(n), size).mean(0)


@dataclass
class Figure1:
    """Both panels of Figure 1 and the facts measured from them."""

    gaze: np.ndarray  # float (S, S): mean per-image gaze heatmap (each sums to 1)
    abnormality: np.ndarray  # float (S, S): fraction of positives annotated at each pixel
    template: np.ndarray  # float (S, S): mean lung mask, the backdrop
    n_gaze: int  # CXR-P train+val images with gaze
    n_positive: int  # CXR-P train+val positives with an RLE mask
    abnormality_upper: float  # share of abnormality mass in the top half (full 1024 px resolution)
    gaze_upper: float  # share of gaze dwell in the top half
    gaze_abnormality_r: float  # pixel correlation of the mean gaze map with the mean abnormality map


def figure1_data(reference: Path, size: int = 128, sigma: float = 3.0, rle_path: Path | None = None,
                 atlas_cache: Path | None = None) -> Figure1:
    """Average gaze and abnormality maps over CXR-P train+val (``sigma`` in output pixels).

    The template is placed over the box that holds 98% of the abnormality mass
    on each axis: pneumothorax lines the lung edge, so that box is the lungs'.
    """
    from dgx.masks.gaze import gaze_heatmaps, load_gaze
    from dgx.masks.rle import abnormality_mask, any_pool, load_rle_table

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
    return Figure1(
        gaze=heat,
        abnormality=small,
        template=lung_template(size, mass_box(small), atlas_cache),
        n_gaze=len(gaze_ids),
        n_positive=len(rles),
        abnormality_upper=upper_half_fraction(full),
        gaze_upper=upper_half_fraction(heat),
        gaze_abnormality_r=float(np.corrcoef(heat.ravel(), small.ravel())[0, 1]),
    )
