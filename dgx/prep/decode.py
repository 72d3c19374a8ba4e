"""Decoding one image file (DICOM, PNG, JPEG) into the cache's uint8 grayscale at a given size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgx.errors import DgxError


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


__all__ = ["decode_image"]
