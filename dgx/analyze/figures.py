"""The paper's mask figures as PNGs: Figure 1 (gaze and abnormality maps) and Figure 2 (one image's masks).

matplotlib runs on the Agg backend (no display needed), and each PNG is
written to a temporary file and renamed, so a crash never leaves half a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgx.analyze import Figure1

# Mask overlay colour per kind, and how opaque the highlighted area is drawn.
MASK_COLORS = {"abnormality": "red", "scaled": "orange", "periphery": "lime", "gaze": "cyan"}
_ALPHA = 0.45


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede the pyplot import's backend choice
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: Path, dpi: int = 150) -> Path:
    """Write ``fig`` to ``out`` atomically (temp file in the same folder, then rename)."""
    from dgx.runs import atomic_write

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return out


def figure1(data: Figure1, out: Path, quantile: float = 0.8) -> Path:
    """Panel A: mean gaze above its ``quantile``; panel B: mean abnormality; both over the lung template."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), constrained_layout=True)
    gaze = data.gaze / data.gaze.max()  # relative dwell: 1 = most-visited pixel
    # Low values are rarely visited positions, mostly tracker noise (paper §5).
    shown = np.ma.masked_less_equal(gaze, np.quantile(gaze, quantile))
    # Inside the lungs every pixel is shown, zero included (the colormap's darkest colour), so the
    # template never shows through as holes; outside them only where some positive was annotated.
    abn = np.ma.masked_where((data.abnormality == 0) & (data.template < 0.5), data.abnormality)
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
    fig.suptitle("Figure 1: where radiologists look and where pneumothorax lies (grey: mean lung atlas)", fontsize=11)
    return save_png(fig, out)


def figure2(image: np.ndarray, masks: dict[str, np.ndarray], out: Path, title: str = "") -> Path:
    """The image, then each mask highlighted on it (Figure 2), left to right in ``masks`` order."""
    plt = _pyplot()
    n = 1 + len(masks)
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3.4), constrained_layout=True)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("image", fontsize=10)
    for ax, (kind, mask) in zip(axes[1:], masks.items()):
        mask = np.asarray(mask, dtype=bool)
        rgba = np.zeros((*mask.shape, 4))
        rgba[mask] = (*_rgb(MASK_COLORS.get(kind, "yellow")), _ALPHA)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title(f"{kind} ({100 * mask.mean():.1f}% of image)", fontsize=10)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    return save_png(fig, out)


def _rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)
