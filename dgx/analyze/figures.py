"""The paper's mask figures as PNGs: Figure 1 (gaze and abnormality maps) and Figure 2 (one image's masks).

matplotlib runs on the Agg backend (no display needed), and each PNG is
written to a temporary file and renamed, so a crash never leaves half a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from dgx.analyze import Figure1
from dgx.plotting import OKABE_ITO, pyplot, save_figure

# Mask overlay colour per kind (a translucent fill plus an opaque outline), and the fill's opacity.
MASK_COLORS = {"abnormality": OKABE_ITO["vermillion"], "scaled": OKABE_ITO["orange"],
               "periphery": OKABE_ITO["bluish green"], "gaze": OKABE_ITO["sky blue"]}
_OTHER_MASK = OKABE_ITO["reddish purple"]
_ALPHA = 0.45
# Default Figure 2 panel side in inches: small images are enlarged (whole pixels) to at least this.
_PANEL_IN = 3.0
_MIN_PANEL_IN = 2.0  # narrowest panel (inches) that still holds its two-line title


def save_png(fig, out: Path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``out`` (atomically, in the format its suffix names) and close it."""
    return save_figure(fig, out, dpi)


def figure1(data: Figure1, out: Path, quantile: float = 0.8) -> Path:
    """Panel A: mean gaze above its ``quantile``; panel B: mean abnormality; both over the measured lung template."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), constrained_layout=True)
    gaze = data.gaze / data.gaze.max()  # relative dwell: 1 = most-visited pixel
    # Low values are rarely visited positions, mostly tracker noise (paper §5).
    shown = np.ma.masked_less_equal(gaze, np.quantile(gaze, quantile))
    # Every pixel inside the annotated region (its holes filled) or the lungs is shown, zero included
    # (the colormap's darkest colour), so the template never shows through as holes.
    inside = ndimage.binary_fill_holes(data.abnormality > 0) | (data.template >= 0.5)
    abn = np.ma.masked_where(~inside, data.abnormality)
    panels = [
        (axes[0], shown, "inferno", "relative gaze dwell",
         f"A. Mean radiologist gaze (top {100 * (1 - quantile):.0f}% of pixels)\n"
         f"{data.n_gaze} CXR-P train/val images; dwell: {100 * data.gaze_upper:.0f}% upper half; "
         f"r = {data.gaze_abnormality_r:.2f} with B"),
        (axes[1], abn, "viridis", "fraction of positives annotated",
         f"B. Mean pneumothorax annotation\n"
         f"{data.n_positive} CXR-P train/val positives; {100 * data.abnormality_upper:.0f}% of mass in upper half"),
    ]
    for ax, layer, cmap, label, title in panels:
        ax.imshow(data.template, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
        im = ax.imshow(layer, cmap=cmap, alpha=0.75, interpolation="bilinear", vmin=0)
        ax.axhline(data.template.shape[0] / 2 - 0.5, color="white", lw=0.8, ls="--")  # the upper/lower split
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    x0, x1, y0, y1 = data.template_box
    fig.suptitle("Figure 1: where radiologists look and where pneumothorax lies", fontsize=11)
    fig.supxlabel(f"Grey backdrop: mean of {data.n_atlas} torchxrayvision atlas lung masks, each at the position "
                  f"measured in its own image\n(mean lung box: x {x0:.2f}-{x1:.2f} of the width, y {y0:.2f}-{y1:.2f} "
                  "of the height), not fitted to the maps above. Dashed line: upper/lower half split.", fontsize=9)
    return save_png(fig, out)


def figure2(image: np.ndarray, masks: dict[str, np.ndarray], out: Path, title: str = "",
            zoom: int | None = None, dpi: int = 150) -> Path:
    """The image, then each mask highlighted on it (Figure 2), left to right in ``masks`` order.

    Each mask is a translucent fill in its :data:`MASK_COLORS` colour with an
    opaque outline, so the kinds differ by more than hue. ``zoom`` repeats every
    image pixel as a ``zoom`` x ``zoom`` block of the PNG (nearest neighbour, for
    display only; default: the smallest that gives panels of 3 inches or more;
    panels stay at least 2 inches wide); ``dpi`` scales text and outlines with it.
    """
    plt = pyplot()
    image = np.asarray(image)
    zoom = zoom or max(1, -(-round(_PANEL_IN * dpi) // max(image.shape[:2])))
    shown = _enlarge(image, zoom)
    height, width = shown.shape[:2]
    n = 1 + len(masks)
    side = max(width / dpi, _MIN_PANEL_IN)  # a tiny zoom still leaves room for the titles
    fig, axes = plt.subplots(1, n, figsize=(n * side, side * height / width + 0.8), constrained_layout=True,
                             squeeze=False)
    axes = axes[0]
    axes[0].imshow(shown, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[0].set_title("image\n", fontsize=10)
    for ax, (kind, mask) in zip(axes[1:], masks.items()):
        mask = np.asarray(mask, dtype=bool)
        big = _enlarge(mask, zoom)
        color = MASK_COLORS.get(kind, _OTHER_MASK)
        rgba = np.zeros((*big.shape, 4))
        rgba[big] = (*_rgb(color), _ALPHA)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.imshow(rgba, interpolation="nearest")
        if big.any() and not big.all():  # the outline follows the pixel edges of the enlarged mask
            ax.contour(big.astype(float), levels=[0.5], colors=[color], linewidths=1.5)
        ax.set_title(f"{kind}\n{100 * mask.mean():.1f}% of image", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    return save_png(fig, out, dpi=dpi)


def _enlarge(a: np.ndarray, zoom: int) -> np.ndarray:
    """Nearest-neighbour upsampling: each pixel of a (H, W) array becomes a ``zoom`` x ``zoom`` block."""
    return np.repeat(np.repeat(a, zoom, axis=0), zoom, axis=1) if zoom > 1 else a


def _rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb  # matplotlib: only when drawing (its import writes ~/.config/matplotlib)

    return to_rgb(color)
