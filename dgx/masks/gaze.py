"""Radiologist gaze heatmaps (Saab et al. 2021), the paper's evidence for Figure 1.

Each fixation has ``x``, ``y`` as fractions of the image side from the top-left
corner, and a dwell ``t`` (60 Hz eye-tracker samples merged into it) that
weights it. In this data **``x`` runs down the rows and ``y`` across the
columns**: on the 268 CXR-P positives with both gaze and a SIIM RLE mask, the
dwell-weighted gaze centroid's ``x`` follows the mask's row centroid (r = 0.56)
and ``y`` its column centroid (r = 0.79), while the other pairing gives r ≈ 0.01
(a test checks this on the real data). So heatmaps are ``grid[row=x, col=y]``,
which is also how the released code binned them (``grid[int(x*n), int(y*n)]``).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from dgx.errors import DgxError

GAZE_COLUMNS = ("image_id", "dicom_path", "fixation", "x", "y", "t")
# Largest float below 1: clipping to it keeps the few fixations slightly past
# the bottom or right edge (x, y up to ~1.07) in the last row/column.
_BELOW_ONE = np.nextafter(1.0, 0.0)


def load_gaze(path: Path) -> pd.DataFrame:
    """Read the gaze CSV (one row per fixation); DgxError if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DgxError(f"gaze file not found at {path}; pass the CXR-P gaze CSV (image_id, x, y, t per fixation)")
    try:
        df = pd.read_csv(path)
    except (OSError, EOFError, UnicodeDecodeError, ValueError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DgxError(f"gaze file {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                       "it is damaged or not a CSV: copy it again from ../shared/reference or pass --reference to "
                       "a folder holding an intact one") from None
    missing = set(GAZE_COLUMNS) - set(df.columns)
    if missing:
        raise DgxError(f"{path} lacks column(s) {', '.join(sorted(missing))}; expected {', '.join(GAZE_COLUMNS)}")
    return df


def gaze_heatmap(fixations: pd.DataFrame, size: int, sigma: float) -> np.ndarray:
    """One image's fixations -> float (size, size) dwell heatmap summing to 1.

    Each fixation adds its dwell ``t`` at ``[int(x * size), int(y * size)]``
    (row from x, column from y: see the module docstring); the grid is then Gaussian-smoothed with
    ``sigma`` pixels, which stands in for the eye tracker's ~1 degree accuracy.
    """
    if size < 1 or sigma < 0:
        raise ValueError(f"need size >= 1 and sigma >= 0, got size={size}, sigma={sigma}")
    x = np.clip(fixations["x"].to_numpy(float), 0.0, _BELOW_ONE)
    y = np.clip(fixations["y"].to_numpy(float), 0.0, _BELOW_ONE)
    t = fixations["t"].to_numpy(float)
    if len(t) == 0 or not t.sum() > 0:
        raise ValueError("need at least one fixation with positive dwell time")
    grid = np.zeros((size, size), dtype=float)
    # add.at accumulates repeated cells (a plain fancy-index += would not).
    np.add.at(grid, ((x * size).astype(int), (y * size).astype(int)), t)
    # reflect (the default) folds the blur back at the border, so no dwell is lost.
    grid = ndimage.gaussian_filter(grid, sigma) if sigma > 0 else grid
    return grid / grid.sum()


def gaze_heatmaps(gaze: pd.DataFrame, image_ids: list[str], size: int, sigma: float) -> np.ndarray:
    """float (N, size, size) heatmaps for ``image_ids``, in that order (KeyError if one has no gaze)."""
    if not image_ids:
        return np.zeros((0, size, size))
    groups = gaze.groupby("image_id", sort=False)
    return np.stack([gaze_heatmap(groups.get_group(i), size, sigma) for i in image_ids])


def gaze_mask(heatmap: np.ndarray, quantile: float = 0.8) -> np.ndarray:
    """Pixels whose heatmap value is above the ``quantile`` of all pixels (the most-visited area)."""
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    heatmap = np.asarray(heatmap, dtype=float)
    return heatmap > np.quantile(heatmap, quantile)
