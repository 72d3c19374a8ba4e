"""SIIM-ACR pneumothorax source: CXR-P and CXR-P Full (paper §3, §6).

Domains ``cxr-p`` (train 947 / val 223 / test 4,607) and ``cxr-p-full``
(train+val 8,540 split 80/20 stratified by ``--seed``, test 2,135).

Labels and abnormality references come from the SIIM RLE table (default: the
copy torchxrayvision ships; ``--opt rle=CSV`` for another). Positives get
``abnormality = rle:<ImageId>``; negatives get ``""``.

``--opt splits=FILE`` imports the paper's lists (columns ``split, image_id,
dicom_path, label``; splits ``train, val, test, trainval_full, test_full`` and
``trainval_gaze``, the 951 images with gaze that the released code trains on,
written as ``cxr-p.pool`` in the list's own order: ``--profile official`` redraws
its 80/20 split from it for every seed; ``trainval_full`` likewise also becomes
``cxr-p-full.pool``, in the list's order).
Without it, a seeded stratified split of the same sizes is drawn from the RLE
table's 12,047 images (CXR-P and CXR-P Full are drawn independently).

Images: the SIIM DICOM tree (``StudyUID/SeriesUID/SOPInstanceUID.dcm``) or
PNG/JPEG files named ``<ImageId>.png``/``.jpg`` anywhere under ``--root``.
With ``--metadata-only`` the manifest keeps the list's ``dicom_path`` or, with
no list, the placeholder ``<ImageId>.dcm``; age, sex and view are then empty
(they are read from the DICOM tags PatientAge, PatientSex, ViewPosition and
PatientID when the images are present).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dgx.errors import DgxError
from dgx.prep import curate as c
from dgx.prep.sources import Source

log = logging.getLogger("dgx")

NAME = "siim"
OPTIONS = {"splits": "", "rle": "", "val_fraction": "0.2"}
LIST_COLUMNS = ("split", "image_id", "dicom_path", "label")
# list split -> (domain, manifest split); trainval_full is divided 80/20 below.
LIST_SPLITS = {"train": ("cxr-p", "train"), "val": ("cxr-p", "val"), "test": ("cxr-p", "test"),
               "trainval_full": ("cxr-p-full", None), "test_full": ("cxr-p-full", "test"),
               "trainval_gaze": ("cxr-p", "pool")}
# Paper sizes (images, positives) used when no list file is given.
SIZES = {"train": (947, 208), "val": (223, 49), "test": (4607, 1009),
         "trainval_full": (8540, 1902), "test_full": (2135, 477)}
IMAGE_SUFFIXES = (".dcm", ".png", ".jpg", ".jpeg")


def prepare(root: Path | None, *, metadata_only: bool, seed: int, options: dict[str, str]) -> dict[str, pd.DataFrame]:
    from dgx.masks.rle import load_rle_table  # scipy: only when abnormality masks are decoded

    values = c.parse_options(options, OPTIONS, NAME)
    try:
        val_fraction = float(values["val_fraction"])
    except ValueError:
        val_fraction = -1.0
    if not 0 < val_fraction < 1:
        raise DgxError(f"{NAME} option val_fraction={values['val_fraction']!r} must be a number in (0, 1), e.g. 0.2")
    root = c.check_root(root, metadata_only, NAME)
    table = load_rle_table(Path(values["rle"]).expanduser() if values["rle"] else None)
    lists = read_splits(Path(values["splits"]).expanduser()) if values["splits"] else draw_splits(table, seed)
    lists = split_trainval(lists, seed, val_fraction)
    if values["splits"]:  # the released CXR-P Full pool: the list's trainval_full in its own order
        lists = pd.concat([lists, lists[lists["split"] == "trainval_full"].assign(mset="pool")], ignore_index=True)

    images = None if metadata_only else index_images(root)
    frames: dict[str, pd.DataFrame] = {}
    for (domain, split), rows in lists.groupby(["domain", "mset"], sort=False):
        frames[f"{domain}.{split}"] = _rows(rows, table, root, images)
    order = [f"{d}.{s}" for d in ("cxr-p", "cxr-p-full") for s in ("train", "val", "test", "pool")]
    return {key: frames[key] for key in order if key in frames}


def read_splits(path: Path) -> pd.DataFrame:
    """The paper's split list (``split, image_id, dicom_path, label``) as a frame."""
    df = c.read_csv(path, f"{NAME} option splits: split list", LIST_COLUMNS)
    df = df.loc[:, list(LIST_COLUMNS)].copy()
    df["split"] = df["split"].astype(str).str.strip()
    unknown = sorted(set(df["split"]) - set(LIST_SPLITS))
    if unknown:
        raise DgxError(f"{path}: unknown split {unknown[0]!r}; expected {', '.join(LIST_SPLITS)}")
    df = df[df["split"].isin(list(LIST_SPLITS))]
    df["image_id"] = df["image_id"].astype(str).str.strip()
    df["dicom_path"] = df["dicom_path"].fillna("").astype(str).str.strip()
    label = pd.to_numeric(df["label"], errors="coerce")
    if not label.isin([0, 1]).all():
        raise DgxError(f"{path}: column label must be 0 or 1")
    df["label"] = label.astype(int)
    return df.reset_index(drop=True)


def draw_splits(table: dict[str, list[str]], seed: int) -> pd.DataFrame:
    """Seeded stratified lists of the paper's sizes from the RLE table's images.

    CXR-P (train, val, test) are disjoint, and so are CXR-P Full's (trainval_full,
    test_full); the two datasets are drawn independently, as they overlap in the paper.
    """
    ids = np.array(sorted(table))
    labels = np.array([int(bool(table[i])) for i in ids])
    rng = np.random.default_rng(seed)
    parts = []
    for group in (("test", "train", "val"), ("test_full", "trainval_full")):
        free = {1: list(rng.permutation(ids[labels == 1])), 0: list(rng.permutation(ids[labels == 0]))}
        for split in group:
            n, pos = SIZES[split]
            for label, count in ((1, pos), (0, n - pos)):
                if len(free[label]) < count:
                    raise DgxError(f"{NAME}: the RLE table has too few images with label {label} for split {split} "
                                   f"({count} needed); pass --opt splits=FILE")
                take, free[label] = free[label][:count], free[label][count:]
                parts.append(pd.DataFrame({"split": split, "image_id": take, "label": label}))
    out = pd.concat(parts, ignore_index=True)
    out["dicom_path"] = ""
    return out.sort_values(["split", "image_id"], kind="stable").reset_index(drop=True)


def split_trainval(lists: pd.DataFrame, seed: int, val_fraction: float) -> pd.DataFrame:
    """Attach (domain, manifest split); ``trainval_full`` goes 80/20 per class, seeded.

    Each class is shuffled by ``default_rng(seed)`` after sorting by image id, and
    ``round(val_fraction * n_class)`` of it goes to val, so both folds keep the class balance.
    """
    lists = lists.copy()
    lists["domain"] = lists["split"].map(lambda s: LIST_SPLITS[s][0])
    lists["mset"] = lists["split"].map(lambda s: LIST_SPLITS[s][1])
    tv = lists[lists["split"] == "trainval_full"]
    rng = np.random.default_rng(seed)
    for label in (1, 0):
        idx = np.array(tv[tv["label"] == label].sort_values("image_id", kind="stable").index)
        idx = rng.permutation(idx)
        n_val = int(round(val_fraction * len(idx)))
        lists.loc[idx[:n_val], "mset"] = "val"
        lists.loc[idx[n_val:], "mset"] = "train"
    return lists


def index_images(root: Path) -> dict[str, str]:
    """Image stem (the SOPInstanceUID / ImageId) -> path relative to ``root``; DICOM preferred."""
    found: dict[str, str] = {}
    rank = {s: i for i, s in enumerate(IMAGE_SUFFIXES)}
    best: dict[str, int] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            stem, suffix = os.path.splitext(name)
            r = rank.get(suffix.lower())
            if r is not None and r < best.get(stem, 99):
                best[stem] = r
                found[stem] = Path(os.path.relpath(os.path.join(folder, name), root)).as_posix()
    return found


def _rows(rows: pd.DataFrame, table: dict[str, list[str]], root: Path | None,
          images: dict[str, str] | None) -> pd.DataFrame:
    out = pd.DataFrame({"label": rows["label"].to_numpy()})
    ids = rows["image_id"].tolist()
    positive = [bool(table.get(i)) for i in ids]
    out["abnormality"] = [f"rle:{i}" if p else "" for i, p in zip(ids, positive)]
    mismatch = int(sum(p != bool(lab) for p, lab in zip(positive, out["label"])))
    if mismatch:
        log.warning("%s: %d images' list label differs from the RLE table; keeping the list's label", NAME, mismatch)
    if images is None:  # metadata only
        out["image"] = [d or f"{i}.dcm" for i, d in zip(ids, rows["dicom_path"])]
        out["age"], out["sex"], out["view"], out["patient_id"] = float("nan"), "", "", ""
    else:
        paths = []
        for i, d in zip(ids, rows["dicom_path"]):
            if d and (root / d).is_file():
                paths.append(d)
            elif i in images:
                paths.append(images[i])
            else:
                raise DgxError(f"{NAME}: image {root / (d or i + '.dcm')} not found (nor {i}.png/.jpg under "
                               f"{root}); check --root, or pass --metadata-only")
        out["image"] = paths
        tags = [dicom_tags(root / p) if p.lower().endswith(".dcm") else {} for p in paths]
        out["age"] = [t.get("age", float("nan")) for t in tags]
        out["sex"] = [t.get("sex", "") for t in tags]
        out["view"] = [t.get("view", "") for t in tags]
        out["patient_id"] = [t.get("patient_id", "") for t in tags]
    domain, split = rows["domain"].iloc[0], rows["mset"].iloc[0]
    if split != "pool":  # the pool keeps the list's order: the released per-seed split indexes into it
        out = out.sort_values("image", kind="stable").reset_index(drop=True)
    return c.to_manifest(out, domain, split)


def dicom_tags(path: Path) -> dict[str, object]:
    """PatientAge (years), PatientSex, ViewPosition and PatientID from a DICOM header."""
    import pydicom  # pydicom: only when a DICOM is decoded
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError) as exc:
        raise DgxError(f"{NAME}: {path} is not a readable DICOM file ({type(exc).__name__}); "
                       "replace it or remove it from the split list") from None
    m = re.match(r"\s*(\d+)\s*([YMWD]?)", str(getattr(ds, "PatientAge", "") or ""))
    age = float("nan")
    if m:
        age = float(m.group(1)) / {"": 1, "Y": 1, "M": 12, "W": 52, "D": 365}[m.group(2)]
    return {"age": age, "sex": str(getattr(ds, "PatientSex", "") or "").strip(),
            "view": str(getattr(ds, "ViewPosition", "") or "").strip(),
            "patient_id": str(getattr(ds, "PatientID", "") or "").strip()}


SOURCE = Source(NAME, "SIIM-ACR source: CXR-P (cxr-p.train/val/test) and CXR-P Full (cxr-p-full.*); "
                "--opt splits=FILE imports the paper's lists", prepare)
