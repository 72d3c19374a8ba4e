"""Lung-periphery attribution masks (the paper's proposed segmentation).

Pneumothorax shows up at the lung edge, and the radiologist-validated relevant
background is "the whole lung except its centre" (paper §5). The mask is a band
inside each lung whose width scales with that lung's size, so the same width
parameter means the same anatomy at any image resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity: a lung touching itself diagonally is still one lung.
_STRUCT = np.ones((3, 3), dtype=bool)


def equivalent_diameter(area: np.ndarray | float) -> np.ndarray:
    """Diameter of the disk with this area (pixels), a size measure robust to shape."""
    return np.sqrt(4.0 * np.asarray(area, dtype=float) / np.pi)


def band_width_map(lung: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel inner distance to the lung boundary and the allowed band width.

    Returns ``(dist, limit)``: ``dist`` is the Euclidean distance (px) from each
    lung pixel to the nearest non-lung pixel (1 on the boundary, 0 outside), and
    ``limit`` is ``width`` times the equivalent diameter of the pixel's connected
    component. A pixel is in the periphery when ``0 < dist <= limit``.
    """
    lung = np.asarray(lung, dtype=bool)
    if lung.ndim != 2:
        raise ValueError(f"lung mask must be 2-D, got shape {lung.shape}")
    if not 0 <= width:
        raise ValueError(f"periphery width must be >= 0, got {width}")
    # Pad so lungs cut by the image border still get a boundary there.
    dist = ndimage.distance_transform_edt(np.pad(lung, 1))[1:-1, 1:-1]
    labels, n = ndimage.label(lung, structure=_STRUCT)
    areas = np.bincount(labels.ravel(), minlength=n + 1).astype(float)
    limits = width * equivalent_diameter(areas)
    limits[0] = 0.0
    return dist, limits[labels]


def periphery_mask(lung: np.ndarray, width: float, abnormality: np.ndarray | None = None) -> np.ndarray:
    """Band between each lung's boundary and the lung eroded by ``width`` x its size.

    ``lung`` is a bool (H, W) mask of one or both lungs; ``width`` is a fraction
    of each connected component's equivalent diameter (0.15 keeps roughly the
    outer half of a lung's area). The abnormality, when given, is united in so
    the mask never cuts away annotated pathology that reaches the lung centre.
    An empty lung gives an empty band (plus the abnormality).
    """
    dist, limit = band_width_map(lung, width)
    # The boundary pixel (dist 1) is always kept, even for a tiny width.
    band = (dist > 0) & ((dist <= limit) | (dist <= 1))
    if abnormality is not None:
        band |= np.asarray(abnormality, dtype=bool)
    return band


def periphery_masks(lungs: np.ndarray, width: float, abnormality: np.ndarray | None = None) -> np.ndarray:
    """:func:`periphery_mask` over a (N, H, W) stack (distance transforms are per image)."""
    lungs = np.asarray(lungs, dtype=bool)
    if lungs.ndim != 3:
        raise ValueError(f"lungs must be (N, H, W), got shape {lungs.shape}")
    out = np.empty_like(lungs)
    for i, lung in enumerate(lungs):
        out[i] = periphery_mask(lung, width, None if abnormality is None else abnormality[i])
    return out
