"""Lung masks from torchxrayvision's ChestX-Det PSPNet, when its weights are on disk.

The model segments 14 anatomical structures at 512x512; the union of its "Left
Lung" and "Right Lung" channels is the lung mask. Its weights
(``pspnet_chestxray_best_model_4.pth``, ~270 MB) are a download that dgx never
triggers: they are used only when already present, at ``--lung-model PATH``,
``$DGX_LUNG_MODEL``, or torchxrayvision's own cache
(``~/.torchxrayvision/models_data/``). Without them the cache falls back to the
lung-atlas template (see :mod:`dgx.prep.cache_builder`).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

from dgx.errors import DgxError

log = logging.getLogger("dgx")

WEIGHTS_FILE = "pspnet_chestxray_best_model_4.pth"
LUNG_CHANNELS = ("Left Lung", "Right Lung")
MODEL_SIZE = 512  # the resolution the PSPNet was trained at
# A segmentation covering less than this share of the image failed (a lateral
# view, an inverted image): the caller uses the template instead.
MIN_LUNG_FRACTION = 0.02
_STRUCT = np.ones((3, 3), dtype=bool)


def default_weights() -> Path:
    """Where the weights are looked for when no path is given."""
    from dgx.config import get_settings  # pydantic settings: read on first use

    env = get_settings().lung_model
    if env:
        return Path(env).expanduser()
    return Path("~/.torchxrayvision/models_data").expanduser() / WEIGHTS_FILE


def find_weights(spec: str | Path | None) -> Path | None:
    """Resolve ``--lung-model``: ``"auto"``/None -> the default path if it exists,
    ``"none"`` -> None (use the atlas), a path -> that file (DgxError if absent)."""
    if spec is None or str(spec) == "auto":
        path = default_weights()
        return path if path.is_file() else None
    if str(spec) == "none":
        return None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DgxError(f"lung segmentation weights {path} not found; download {WEIGHTS_FILE} from the "
                       "torchxrayvision releases on a connected machine, or pass --lung-model none for the atlas")
    return path


def clean_lungs(mask: np.ndarray) -> np.ndarray:
    """Keep the (at most two) largest components, dropping specks under 10% of the largest."""
    labels, n = ndimage.label(mask, structure=_STRUCT)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.argsort(sizes)[::-1][:2]
    keep = keep[sizes[keep] >= 0.1 * sizes.max()] + 1
    return np.isin(labels, keep)


class LungSegmenter:
    """Callable: uint8 images (N, H, W) -> bool lung masks (N, H, W), or None where segmentation failed."""

    def __init__(self, weights: Path, device: str | None = None, batch_size: int = 8):
        import torch  # torch: only when the lung model runs

        try:
            # torchxrayvision (torch): only when the lung model runs
            from torchxrayvision.baseline_models.chestx_det import PSPNet
        except ImportError as exc:
            raise DgxError(f"lung segmentation needs torchxrayvision's chestx_det model ({exc}); "
                           "pip install 'torchxrayvision>=1.2'") from None
        weights = Path(weights)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        # PSPNet loads <cache_dir>/<WEIGHTS_FILE> and downloads it when missing; a
        # private folder holding a link to the user's file guarantees it never downloads.
        with tempfile.TemporaryDirectory(prefix="dgx-lungseg-") as folder:
            link = Path(folder) / WEIGHTS_FILE
            link.symlink_to(weights.resolve())
            try:
                model = PSPNet(cache_dir=folder)
            except Exception as exc:  # a truncated or foreign checkpoint
                first = str(exc).splitlines()[0][:120] if str(exc) else ""
                raise DgxError(f"cannot load lung segmentation weights {weights} ({type(exc).__name__}: {first}); "
                               "is it the torchxrayvision PSPNet checkpoint?") from None
        self.channels = [PSPNet.targets.index(name) for name in LUNG_CHANNELS]
        self.model = model.to(self.device).eval()

    def __call__(self, images: np.ndarray) -> list[np.ndarray | None]:
        import torch  # torch: only when the lung model runs
        import torch.nn.functional as F

        images = np.asarray(images)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        h, w = images.shape[1:]
        out: list[np.ndarray | None] = []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size])).to(self.device)
            # torchxrayvision's convention: pixel values scaled to [-1024, 1024].
            x = x[:, None].float() / 255.0 * 2048.0 - 1024.0
            x = F.interpolate(x, size=(MODEL_SIZE, MODEL_SIZE), mode="bilinear", align_corners=False)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*upsample.*deprecated", category=UserWarning)
                logits = self.model(x)[:, self.channels]
            lungs = (logits > 0).any(dim=1, keepdim=True).float()  # sigmoid > 0.5 in either lung
            lungs = F.interpolate(lungs, size=(h, w), mode="nearest")[:, 0].cpu().numpy() > 0.5
            for lung in lungs:
                lung = clean_lungs(lung)
                out.append(lung if lung.mean() >= MIN_LUNG_FRACTION else None)
        return out


__all__ = ["LungSegmenter", "find_weights", "default_weights", "clean_lungs", "WEIGHTS_FILE"]
