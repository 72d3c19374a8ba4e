"""Decoding one image file (DICOM, PNG, JPEG) into the cache's uint8 grayscale at a given size.

Two decodings (``Profile.decode``, see dgx/profiles.py); the cache stores both:

* ``stretch`` (dgx): DICOM modality rescale applied, MONOCHROME1 inverted, the
  range stretched to 0-255 (16-bit PNGs too), then PIL bilinear with
  ``reducing_gap=2.0``.
* ``released``: the released ``dataloader.py:RoboGazeDataset.__getitem__``:
  ``np.uint8(ds.pixel_array)`` (no rescale, no inversion, values wrap modulo
  256) or the file as PIL opens it, resized by ``utils.py:get_data_transforms``'
  ``transforms.Resize([size, size])`` (PIL bilinear, no reducing gap). Colour
  images become one grey channel, as in ``stretch``; files above 8 bits, which
  the released code fed unscaled, are stretched as in ``stretch``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dgx.errors import DgxError


def decode_image(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Image file -> (uint8 (size, size) decoded as ``stretch``, original (H, W)); DgxError naming the file
    when unreadable."""
    image, _, shape = decode_both(path, size)
    return image, shape


def decode_both(path: Path, size: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Image file -> (``stretch`` uint8 (size, size), ``released`` uint8 (size, size), original (H, W)),
    read once; DgxError naming the file when unreadable."""
    from PIL import Image  # image libraries load when a cache is built, not with every dgx command

    path = Path(path)
    if not path.is_file():
        raise DgxError(f"image {path} not found")
    try:
        stretched, raw = _read_dicom(path) if path.suffix.lower() == ".dcm" else _read_file(path)
    except DgxError:
        raise
    except Exception as exc:  # any decoder failure on a bad file
        raise DgxError(f"cannot decode image {path} ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})") from None
    if stretched.ndim != 2:
        raise DgxError(f"image {path} has shape {stretched.shape}; expected one grayscale channel")
    img = Image.fromarray(np.clip(stretched, 0, 255).round().astype(np.uint8))
    out = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0), dtype=np.uint8)
    return out, _released_resize(raw if raw is not None else img, size), stretched.shape


def _released_resize(image, size: int) -> np.ndarray:
    """The released ``transforms.Resize([size, size])`` on a PIL image: PIL bilinear, no reducing gap."""
    from torchvision.transforms.functional import resize  # torchvision loads when a cache is built

    return np.asarray(resize(image, [size, size]), dtype=np.uint8)


def _read_file(path: Path):
    """(stretched float array, the PIL image the released code resized, or None above 8 bits)."""
    from PIL import Image  # image libraries load when a cache is built, not with every dgx command

    with Image.open(path) as im:
        im.load()
        eight_bit = im.mode not in ("I", "I;16", "I;16B", "F")
        grey = im.convert("L") if eight_bit else im
        arr = np.asarray(grey).astype(np.float64)
    if arr.max() > 255:
        arr = _to_uint8(arr)
    return arr, grey if eight_bit else None


def _read_dicom(path: Path):
    """(stretched float array, the PIL image of ``np.uint8(pixel_array)`` in grey)."""
    # image libraries load when a cache is built, not with every dgx command
    import pydicom
    from PIL import Image
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError) as exc:
        raise DgxError(f"{path} is not a readable DICOM file ({type(exc).__name__})") from None
    pixels = ds.pixel_array
    arr = pixels.astype(np.float64)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(-1)
    if arr.ndim != 2:
        return arr, None  # decode_both names the shape
    released = Image.fromarray(np.uint8(pixels)).convert("L")
    from pydicom.pixels import apply_rescale  # pydicom loads when a cache is built

    arr = np.asarray(apply_rescale(arr, ds), dtype=np.float64)
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        arr = arr.max() - arr + arr.min()
    return _to_uint8(arr), released


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0


__all__ = ["decode_image", "decode_both"]
