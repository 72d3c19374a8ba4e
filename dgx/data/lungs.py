"""Real lung shapes for the synthetic benchmark.

torchxrayvision ships 517 hand-drawn binary lung masks (v7labs). They come from
papers and hospitals of every size and format, so each one is binarized,
cleaned of annotation artefacts, cropped to the lungs' bounding box and resized
to a square; that box, as fractions of the mask's own image, is kept too
(:func:`load_lung_boxes`). The generator then places them into a thorax with a random affine,
which gives realistic, varied lung outlines without shipping any image data.
"""

from __future__ import annotations

import io
import logging
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from dgx.errors import DgxError
from dgx.masks.periphery import band_width_map
from dgx.runs import atomic_write

log = logging.getLogger(__name__)

ATLAS_ZIP = "semantic_masks_v7labs_lungs.zip"
N_ATLAS_ENTRIES = 517  # masks in the zip, including the empty ones
# Bump when the cleaning below changes, so stale disk caches are not reused.
ATLAS_VERSION = 2  # 2: the cache also holds each mask's lung box
# Masks are cleaned at this resolution: fine enough for 224 px images, coarse
# enough that decoding and labelling stay cheap.
_MASTER = 256
# Annotation tools leave grey blobs (values < 128) next to the lungs.
_THRESHOLD = 128
# Fragments smaller than this fraction of the largest component are artefacts.
_MIN_FRAGMENT = 0.1


def atlas_zip_path() -> Path:
    """Where torchxrayvision keeps the lung-mask zip (raises DgxError if absent)."""
    try:
        import torchxrayvision  # torchxrayvision (torch): only when its lung files or models are read
    except ImportError as e:  # the package is a hard requirement of decoy-cxr
        raise DgxError("decoy-cxr needs the lung masks from torchxrayvision; pip install torchxrayvision") from e
    path = Path(torchxrayvision.__file__).parent / "data" / ATLAS_ZIP
    if not path.is_file():
        raise DgxError(
            f"lung mask archive not found at {path}; reinstall torchxrayvision (>=1.2) which ships {ATLAS_ZIP}"
        )
    return path


def _decode(blob: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """One zip entry -> (cleaned bool mask cropped to the lungs, their box), or None if empty.

    The box is (x0, x1, y0, y1): the lungs' pixel edges as fractions of the
    entry's own width and height, measured before the crop.
    """
    from PIL import Image  # PIL: only to read or resize an image file

    im = Image.open(io.BytesIO(blob))
    im.draft("L", (_MASTER, _MASTER))  # JPEG-only speed-up; a no-op for PNG
    im = im.convert("L")
    im.thumbnail((2 * _MASTER, 2 * _MASTER), Image.Resampling.BILINEAR)
    mask = np.asarray(im) >= _THRESHOLD
    labels, n = ndimage.label(mask)
    if n == 0:
        return None  # 82 entries of the archive are blank
    sizes = np.bincount(labels.ravel())[1:]
    # Two lungs at most; anything else is a marker, a label or a JPEG speck.
    keep = np.argsort(sizes)[::-1][:2]
    keep = keep[sizes[keep] >= _MIN_FRAGMENT * sizes.max()] + 1
    mask = np.isin(labels, keep)
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    resized = Image.fromarray(crop.astype(np.uint8) * 255).resize((_MASTER, _MASTER), Image.Resampling.BILINEAR)
    h, w = mask.shape
    box = np.array([xs.min() / w, (xs.max() + 1) / w, ys.min() / h, (ys.max() + 1) / h])
    return np.asarray(resized) >= 128, box


def _resize_stack(masks: np.ndarray, size: int) -> np.ndarray:
    """Resize a (N, S, S) bool stack to (N, size, size) with area-correct bilinear."""
    from PIL import Image  # PIL: only to read or resize an image file

    if masks.shape[-1] == size:
        return masks.copy()
    out = np.empty((len(masks), size, size), dtype=bool)
    for i, m in enumerate(masks):
        im = Image.fromarray(m.astype(np.uint8) * 255)
        out[i] = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)) >= 128
    return out


@lru_cache(maxsize=1)
def _master_from_zip() -> tuple[np.ndarray, np.ndarray]:
    path = atlas_zip_path()
    with zipfile.ZipFile(path) as z:
        blobs = [z.read(n) for n in sorted(z.namelist()) if not n.endswith("/")]
    if len(blobs) != N_ATLAS_ENTRIES:
        log.warning("expected %d lung masks in %s, found %d", N_ATLAS_ENTRIES, path, len(blobs))
    # PNG decoding releases the GIL, so threads halve the ~4 s cold start.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as ex:
        decoded = list(ex.map(_decode, blobs))
    kept = [d for d in decoded if d is not None]
    if not kept:
        raise DgxError(f"no usable lung masks in {path}")
    return np.stack([m for m, _ in kept]), np.stack([b for _, b in kept])


def _master(cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """The cleaned atlas at master resolution and each mask's box, from a disk cache when available."""
    if cache_dir is None:
        return _master_from_zip()
    file = Path(cache_dir) / f"lung-atlas-v{ATLAS_VERSION}-{_MASTER}.npz"
    if file.is_file():
        with np.load(file) as z:
            shape = tuple(z["shape"])
            masks = np.unpackbits(z["bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)
            return masks, z["boxes"]
    masks, boxes = _master_from_zip()
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(file) as tmp:  # concurrent runs never see half a file
        np.savez_compressed(tmp, bits=np.packbits(masks), shape=np.array(masks.shape), boxes=boxes)
    return masks, boxes


@lru_cache(maxsize=8)
def _atlas_cached(size: int, cache_dir: str | None) -> np.ndarray:
    atlas = _resize_stack(_master(Path(cache_dir) if cache_dir else None)[0], size)
    atlas.setflags(write=False)  # shared between callers through the lru_cache
    return atlas


def load_lung_atlas(size: int, cache_dir: Path | None = None) -> np.ndarray:
    """All non-empty lung masks, bool (M, size, size), each cropped to its lungs.

    The archive holds 517 entries of which 82 are blank, so M is 435. Each mask
    fills the square (the lungs' bounding box is stretched to it); the caller
    positions it in the image. Results are cached in memory per size, and the
    decoded archive is cached under ``cache_dir`` when given (the cold decode
    takes ~2 s). The returned array is read-only.
    """
    if size < 8:
        raise DgxError(f"lung atlas size must be >= 8, got {size}")
    return _atlas_cached(int(size), str(cache_dir) if cache_dir is not None else None)


def load_lung_boxes(cache_dir: Path | None = None) -> np.ndarray:
    """Where each mask of :func:`load_lung_atlas` sat in its own image: float (M, 4) of (x0, x1, y0, y1).

    The lungs' bounding box as fractions of that image's width and height,
    measured before the mask was cropped and squared, in atlas order. Pass it
    to :func:`place_lungs` (centre and extent) to put each mask back where it
    was drawn. ``cache_dir`` as for :func:`load_lung_atlas`. Read-only.
    """
    boxes = _master(Path(cache_dir) if cache_dir is not None else None)[1].astype(float)
    boxes.setflags(write=False)
    return boxes


def split_sides(lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split one (H, W) lung mask into its image-left and image-right lungs.

    The mediastinum is the emptiest column in the middle 40% of the lungs'
    extent. Whole connected components go to the side of their centroid (the
    lungs are rarely symmetric, so a fixed midline would cut one), and only a
    single joined blob is cut at that column.
    """
    lung = np.asarray(lung, dtype=bool)
    cols = lung.sum(axis=0)
    xs = np.flatnonzero(cols)
    if len(xs) == 0:
        return lung.copy(), lung.copy()
    lo, hi = xs[0], xs[-1]
    band = np.arange(int(lo + 0.3 * (hi - lo)), int(lo + 0.7 * (hi - lo)) + 1)
    cut = band[np.argmin(cols[band])] + 0.5
    labels, k = ndimage.label(lung, structure=np.ones((3, 3), dtype=bool))
    if k >= 2:
        idx = np.arange(1, k + 1)
        cx = np.asarray(ndimage.center_of_mass(lung, labels, idx))[:, 1]
        left = np.isin(labels, idx[cx < cut])
    else:
        left = lung & (np.arange(lung.shape[1]) < cut)[None, :]
    return left, lung & ~left


def place_lungs(
    atlas: np.ndarray,
    index: np.ndarray,
    center: np.ndarray,
    extent: np.ndarray,
    angle: np.ndarray,
    size: int,
) -> np.ndarray:
    """Paste atlas masks into (N, size, size) images with a per-image affine.

    ``center`` (N, 2) is the lungs' box centre as (x, y) fractions of the image,
    ``extent`` (N, 2) its (width, height) as fractions, ``angle`` (N,) a
    rotation in radians. Sampling is bilinear and re-thresholded, which keeps
    outlines smooth when the atlas and image sizes differ.
    """
    a = atlas.shape[-1]
    out = np.empty((len(index), size, size), dtype=bool)
    for i, k in enumerate(index):
        cos, sin = np.cos(angle[i]), np.sin(angle[i])
        sy, sx = a / extent[i, 1] / size, a / extent[i, 0] / size
        # Output (row, col) -> atlas (row, col): inverse rotation, then scale.
        matrix = np.array([[sy * cos, -sy * sin], [sx * sin, sx * cos]])
        u0, v0 = 0.5 / size - center[i, 0], 0.5 / size - center[i, 1]
        offset = np.array(
            [a / extent[i, 1] * (-sin * u0 + cos * v0), a / extent[i, 0] * (cos * u0 + sin * v0)]
        ) + (0.5 * a - 0.5)
        src = atlas[k].astype(np.float32)
        out[i] = ndimage.affine_transform(src, matrix, offset, (size, size), order=1, cval=0.0, prefilter=False) >= 0.5
    return out


def pneumothorax_region(
    rng: np.random.Generator, lung: np.ndarray, depth: float, context_width: float
) -> tuple[np.ndarray, np.ndarray]:
    """A pneumothorax pocket and its ipsilateral context band in one (H, W) lung pair.

    One lung is picked at random. The pocket is the part of its edge band up to
    ``depth`` x (0.6-1) lung diameters deep that lies at the apex (60%) or
    along the lateral wall (40%), where air collects in an upright patient.
    The context band is the whole edge of the same lung, ``context_width``
    diameters deep: the collapsed lung's retracted margin. Depths are measured
    exactly as :func:`dgx.masks.periphery_mask` measures its band (on the whole
    lung mask, per connected component), so with ``depth`` and
    ``context_width`` at most the periphery width both lie inside that mask.
    """
    left, right = split_sides(lung)
    side = left if (rng.random() < 0.5 or not right.any()) and left.any() else right
    dist, diam = band_width_map(lung, 1.0)  # width 1.0: the limit is each lung's equivalent diameter
    ys, xs = np.nonzero(side)
    top, h, x0, x1 = ys.min(), np.ptp(ys) + 1, xs.min(), xs.max()
    yy, xx = np.mgrid[: lung.shape[0], : lung.shape[1]]
    if rng.random() < 0.6:
        sector = yy <= top + rng.uniform(0.3, 0.5) * h
    else:  # the outer wall is the side away from the image centre
        reach = rng.uniform(0.3, 0.45) * (x1 - x0 + 1)
        outer = xx <= x0 + reach if x0 + x1 < lung.shape[1] else xx >= x1 - reach
        sector = outer & (yy >= top + 0.15 * h)
    rim = side & (dist <= np.maximum(1.0, depth * rng.uniform(0.6, 1.0) * diam))
    pocket = rim & sector
    if not pocket.any():  # a sliver of a lung: fall back to its whole rim
        pocket = rim
    return pocket, side & (dist <= np.maximum(1.0, context_width * diam))
