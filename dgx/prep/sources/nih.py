"""ChestX-ray8 (NIH) age target, ``chestx-ray8-age.test`` (paper §3).

SIIM-ACR is a subset of ChestX-ray8, so its images are removed first (leakage),
then images of patients aged at least the dataset's median (49, over images) are
kept; positives have "Pneumothorax" among their Finding Labels, negatives are
exactly "No Finding". 4,607 are drawn, 1,014 positive.

``--opt protocol=official`` reproduces the paper's code release instead: its
split file is named for mean age 71.391, which this metadata gives exactly when
positives are images whose only finding is Pneumothorax (1,016 aged >= 49) and
the oldest 1,014 positives and 3,593 negatives are taken (ties in CSV order).
The default seeded draw over all ages >= 49 has mean age ~60.

Metadata: ``Data_Entry_2017_v2020.csv`` under ``--root``, else the copy
torchxrayvision ships. Images: ``<root>/images/<Image Index>`` (the NIH layout);
the per-archive layout ``<root>/images_001/images/...`` is resolved too.

SIIM-ACR images carry new DICOM UIDs, so removal needs either a mapping file
(``--opt siim_map=CSV`` with an "Image Index" column) or both image sets
(``--opt siim_root=DIR``), compared by :func:`~dgx.prep.curate.pixel_hash`.
Only the eligible NIH images (age and label filters) are hashed, ~31k rather than 112k.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from dgx.errors import DgxError
from dgx.prep import curate as c

log = logging.getLogger("dgx")

SOURCE = "chestxray8"
DOMAIN = "chestx-ray8-age"
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017_v2020.csv.gz", "Data_Entry_2017.csv")
NEEDED = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position")
OPTIONS = {**c.SIZE_OPTIONS, **c.PROTOCOL_OPTION, "siim_map": "", "siim_root": ""}


def prepare(root: Path | None, *, metadata_only: bool, seed: int, options: dict[str, str]) -> dict[str, pd.DataFrame]:
    values = c.parse_options(options, OPTIONS, SOURCE)
    n, positives = c.target_size(values, SOURCE)
    official = c.parse_protocol(values, SOURCE) == "official"
    root = c.check_root(root, metadata_only, SOURCE)
    csv = c.find_file(root, CSV_NAMES) or c.shipped_csv("Data_Entry_2017_v2020.csv.gz")
    meta = c.read_csv(csv, "NIH metadata", NEEDED)
    log.info("%s: metadata %s", SOURCE, csv)
    median = c.median_age(meta["Patient Age"])

    pool = eligible(meta, median, pure_positives=official)
    if not metadata_only:
        pool["image"] = resolve_images(root, pool["Image Index"])
    if values["siim_map"]:
        pool = remove_mapped(pool, Path(values["siim_map"]).expanduser())
    elif values["siim_root"]:
        if metadata_only:
            raise DgxError(f"{SOURCE}: --opt siim_root needs the NIH images to compare; drop --metadata-only "
                           "or pass --opt siim_map=CSV instead")
        pool = remove_by_content(pool, root, Path(values["siim_root"]).expanduser())
    else:
        log.warning("%s: SIIM-ACR images were NOT removed (leakage); pass --opt siim_map=CSV or --opt siim_root=DIR",
                    SOURCE)
    log.info("%s: median age %g; eligible %d positives, %d negatives", SOURCE, median,
             int(pool["label"].sum()), int((pool["label"] == 0).sum()))
    target = c.sample_target(pool, n, positives, seed, SOURCE, how="oldest" if official else "seeded")
    if not metadata_only:
        c.check_images(root, target["image"], SOURCE)
    return {f"{DOMAIN}.test": c.to_manifest(target, DOMAIN)}


def eligible(meta: pd.DataFrame, median: float, pure_positives: bool = False) -> pd.DataFrame:
    """Images of patients aged >= median, labelled pneumothorax (1) or "No Finding" (0).

    Positives have Pneumothorax among their findings, or, with ``pure_positives``,
    as their only finding (the official protocol).
    """
    age = pd.to_numeric(meta["Patient Age"], errors="coerce")
    findings = meta["Finding Labels"].fillna("").astype(str)
    if pure_positives:
        positive = findings == "Pneumothorax"
    else:
        positive = findings.str.split("|").apply(lambda labels: "Pneumothorax" in labels)
    negative = findings == "No Finding"
    keep = (age >= median) & (positive | negative)
    pool = meta.loc[keep, list(NEEDED)].copy()
    pool["label"] = positive[keep].astype(int)
    pool["image"] = "images/" + pool["Image Index"].astype(str)
    pool["patient_id"] = pool["Patient ID"].astype(str).str.zfill(5)
    pool["age"] = age[keep].astype(float)
    pool["sex"] = pool["Patient Gender"].fillna("").astype(str)
    pool["view"] = pool["View Position"].fillna("").astype(str)
    return pool.reset_index(drop=True)


def resolve_images(root: Path, names: pd.Series) -> pd.Series:
    """Relative paths of NIH images: ``images/<name>`` or ``images_NNN/images/<name>``.

    Names not found keep ``images/<name>``; the caller reports them if sampled.
    """
    where: dict[str, str] = {}
    for folder in sorted([root / "images", *root.glob("images_*/images")]):
        if folder.is_dir():
            rel = folder.relative_to(root).as_posix()
            for entry in os.scandir(folder):
                where.setdefault(entry.name, f"{rel}/{entry.name}")
    return names.astype(str).map(lambda name: where.get(name, f"images/{name}"))


def remove_mapped(pool: pd.DataFrame, mapping: Path) -> pd.DataFrame:
    """Drop the NIH images listed in a SIIM-ACR -> NIH mapping CSV ("Image Index" column)."""
    table = c.read_csv(mapping, f"{SOURCE} option siim_map: mapping file", ["Image Index"])
    siim = set(table["Image Index"].astype(str).str.strip())
    drop = pool["Image Index"].astype(str).isin(siim)
    log.info("%s: removed %d SIIM-ACR images listed in %s", SOURCE, int(drop.sum()), mapping)
    return pool[~drop].reset_index(drop=True)


def remove_by_content(pool: pd.DataFrame, root: Path, siim_root: Path) -> pd.DataFrame:
    """Drop NIH images whose pixels match a SIIM-ACR image (see :func:`dgx.prep.curate.pixel_hash`)."""
    if not siim_root.is_dir():
        raise DgxError(f"{SOURCE} option siim_root={siim_root} is not a folder; point it at the SIIM-ACR images")
    siim_files = sorted(p for p in siim_root.rglob("*") if p.suffix.lower() in (".dcm", ".png", ".jpg", ".jpeg"))
    if not siim_files:
        raise DgxError(f"{SOURCE} option siim_root={siim_root} holds no .dcm/.png/.jpg images")
    siim = set(c.hash_images(siim_files, "hashing SIIM-ACR"))
    present = [i for i, image in enumerate(pool["image"]) if (root / image).is_file()]
    digests = c.hash_images([root / pool["image"].iloc[i] for i in present], "hashing ChestX-ray8")
    drop = pd.Series(False, index=pool.index)
    drop.iloc[[i for i, digest in zip(present, digests) if digest in siim]] = True
    log.info("%s: removed %d images whose pixels match SIIM-ACR images in %s", SOURCE, int(drop.sum()), siim_root)
    return pool[~drop].reset_index(drop=True)
