"""Curation shared by every real source: option parsing, seeded class-balanced sampling,
age filters, image checks and image-content hashing.

The paper (§3) builds each OOD target as 4,607 images with the source's class
balance: 1,014 pneumothorax positives (22%). Sampling draws positives and
negatives separately with ``numpy.random.default_rng(seed)`` from pools sorted by
image path, so the same metadata and seed always give the same manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from dgx.errors import DgxError, unknown_choice
from dgx.prep.manifest import COLUMNS

TARGET_N = 4607  # images per OOD target (paper §3)
TARGET_POSITIVES = 1014  # pneumothorax positives among them (22%, the source's balance)
HASH_SIZE = 64  # side of the grayscale thumbnail whose pixels are hashed


def shipped_csv(filename: str) -> Path:
    """A metadata CSV that torchxrayvision ships (public, no credentials needed)."""
    import torchxrayvision  # torchxrayvision (torch): only when its lung files or models are read

    return Path(torchxrayvision.__file__).parent / "data" / filename


def parse_options(options: Mapping[str, str], allowed: Mapping[str, str], source: str) -> dict[str, str]:
    """Reject option keys a source does not know; ``allowed`` maps key -> default."""
    for key in options:
        if key not in allowed:
            raise unknown_choice(f"{source} option", key, allowed)
    return {**allowed, **options}


def parse_int(values: Mapping[str, str], key: str, source: str) -> int:
    raw = values[key]
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise DgxError(f"{source} option {key}={raw!r} must be a whole number, e.g. --opt {key}=100") from None
    if value < 0:
        raise DgxError(f"{source} option {key}={raw!r} must not be negative")
    return value


def target_size(values: Mapping[str, str], source: str) -> tuple[int, int]:
    """(n, positives) from the options ``n`` and ``positives``."""
    n, positives = parse_int(values, "n", source), parse_int(values, "positives", source)
    if positives > n:
        raise DgxError(f"{source} option positives={positives} exceeds n={n}; positives must be at most n")
    return n, positives


SIZE_OPTIONS = {"n": str(TARGET_N), "positives": str(TARGET_POSITIVES)}


def read_csv(path: Path, what: str, usecols: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a metadata CSV (plain or .gz), turning a missing or malformed file into a DgxError."""
    path = Path(path)
    if not path.is_file():
        raise DgxError(f"{what} {path} not found")
    try:
        df = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DgxError(f"{what} {path} is not a readable CSV ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if usecols is not None:
        missing = [c for c in usecols if c not in df.columns]
        if missing:
            raise DgxError(f"{what} {path} lacks column(s) {', '.join(missing)}; is it the right file?")
    return df


def find_file(root: Path | None, names: Iterable[str]) -> Path | None:
    """The first of ``names`` (relative paths) that exists under ``root``."""
    if root is None:
        return None
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def check_root(root: Path | None, metadata_only: bool, source: str) -> Path | None:
    if root is None:
        if not metadata_only:
            raise DgxError(f"{source}: --root is required to check the images; pass --root PATH or --metadata-only")
        return None
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DgxError(f"{source}: --root {root} is not a folder; point it at the dataset's top folder")
    return root


def median_age(ages: pd.Series) -> float:
    """The dataset's median age, over images (as the paper's 'median for the dataset')."""
    return float(pd.to_numeric(ages, errors="coerce").median())


# How a target's images are chosen from its eligible pool (see sample_target).
SELECTIONS = ("seeded", "oldest", "first")
# --opt protocol=: "seeded" is dgx's definition (uniform seeded draw); "official"
# reproduces the lists of the paper's code release (see each source's docstring).
PROTOCOLS = ("seeded", "official")
PROTOCOL_OPTION = {"protocol": "seeded"}


def parse_protocol(values: Mapping[str, str], source: str) -> str:
    protocol = values["protocol"]
    if protocol not in PROTOCOLS:
        raise unknown_choice(f"{source} option protocol", protocol, PROTOCOLS)
    return protocol


def sample_target(pool: pd.DataFrame, n: int, positives: int, seed: int, where: str,
                  how: str = "seeded") -> pd.DataFrame:
    """Pick ``positives`` rows with label 1 and ``n - positives`` with label 0.

    ``how``:
    - ``"seeded"``: a uniform draw with ``numpy.random.default_rng(seed)`` from the
      pool sorted by image, so the draw depends only on the pool's content;
    - ``"oldest"``: the oldest images of each class (ties kept in pool order);
    - ``"first"``: the first images of each class in pool (metadata CSV) order.
    """
    if how not in SELECTIONS:
        raise ValueError(f"unknown selection {how!r}; expected one of {SELECTIONS}")
    if how == "seeded":
        pool = pool.sort_values("image", kind="stable")
    elif how == "oldest":
        pool = pool.sort_values("age", ascending=False, kind="stable", na_position="last")
    pool = pool.reset_index(drop=True)
    pos, neg = pool[pool["label"] == 1], pool[pool["label"] == 0]
    negatives = n - positives
    if len(pos) < positives or len(neg) < negatives:
        raise DgxError(f"{where}: too few eligible images: {len(pos)} positives for {positives} requested, "
                       f"{len(neg)} negatives for {negatives} requested; lower --opt n= / --opt positives=")
    if how == "seeded":
        rng = np.random.default_rng(seed)
        take_pos = np.sort(rng.choice(len(pos), size=positives, replace=False))
        take_neg = np.sort(rng.choice(len(neg), size=negatives, replace=False))
    else:
        take_pos, take_neg = np.arange(positives), np.arange(negatives)
    out = pd.concat([pos.iloc[take_pos], neg.iloc[take_neg]])
    return out.sort_values("image", kind="stable").reset_index(drop=True)


def to_manifest(df: pd.DataFrame, domain: str, split: str = "test") -> pd.DataFrame:
    """Fill the manifest columns a source does not set, in manifest order."""
    out = df.copy()
    out["domain"], out["split"] = domain, split
    for col in COLUMNS:
        if col not in out.columns:
            out[col] = float("nan") if col == "age" else ""
    return out.loc[:, list(COLUMNS)]


def check_images(root: Path, images: Iterable[str], source: str) -> None:
    """Every referenced image must exist under ``root``; report the first that does not."""
    for image in images:
        if not (root / image).is_file():
            raise DgxError(f"{source}: image {root / image} not found; check --root, or pass --metadata-only "
                           "to build the manifest without the images")


def pixel_hash(path: Path) -> str:
    """sha1 of the decoded pixels, as a 64×64 8-bit grayscale thumbnail.

    Two files with the same picture (a PNG and its DICOM re-encoding) hash the
    same, whatever their container or size.
    """
    from PIL import Image  # PIL: only to read or resize an image file

    path = Path(path)
    if path.suffix.lower() == ".dcm":
        import pydicom  # pydicom: only when a DICOM is decoded

        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float64)
        if arr.max() > 255:  # high bit depth: bring to 8 bits like the PNG releases
            arr = arr / arr.max() * 255
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            arr = 255 - arr
        img = Image.fromarray(arr.round().astype(np.uint8), mode="L")
    else:
        try:
            img = Image.open(path)
            img.load()
        except OSError as exc:
            raise DgxError(f"cannot decode image {path} ({exc}); is the file complete?") from None
        img = img.convert("L")
    thumb = np.asarray(img.resize((HASH_SIZE, HASH_SIZE), Image.BILINEAR), dtype=np.uint8)
    return hashlib.sha1(thumb.tobytes()).hexdigest()


def hash_images(paths: Iterable[Path], description: str) -> list[str]:
    """:func:`pixel_hash` of each path, in order, with a progress bar (thousands of images take minutes)."""
    from dgx.progress import make_progress  # rich: only when a long loop shows progress

    paths = list(paths)
    out: list[str] = []
    with make_progress(transient=True) as progress:
        task = progress.add_task(description, total=len(paths), status="")
        for path in paths:
            out.append(pixel_hash(path))
            progress.advance(task)
    return out
