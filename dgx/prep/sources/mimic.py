"""MIMIC-CXR target, ``mimic-cxr.test`` (paper §3): a shift of hospital only.

MIMIC-CXR is credentialed (PhysioNet), so nothing is shipped: ``--root`` must
hold ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` (labels per study) and
``mimic-cxr-2.0.0-metadata.csv(.gz)`` (one row per image), as in MIMIC-CXR-JPG.
They are joined on subject_id and study_id; frontal views (ViewPosition PA or
AP) are kept; labels follow CheXpert's rules (positive: Pneumothorax == 1;
negative: 0 or blank; uncertain -1 dropped). 4,607 images, 1,014 positive.
Demographics are not released, so age and sex are empty.

Image paths: ``files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dgx.errors import DgxError
from dgx.prep import curate as c

log = logging.getLogger("dgx")

SOURCE = "mimic"
DOMAIN = "mimic-cxr"
LABELS = "mimic-cxr-2.0.0-chexpert.csv"
METADATA = "mimic-cxr-2.0.0-metadata.csv"
FRONTAL = ("PA", "AP")
OPTIONS = dict(c.SIZE_OPTIONS)


def prepare(root: Path | None, *, metadata_only: bool, seed: int, options: dict[str, str]) -> dict[str, pd.DataFrame]:
    values = c.parse_options(options, OPTIONS, SOURCE)
    n, positives = c.target_size(values, SOURCE)
    if root is None:
        raise DgxError(f"{SOURCE}: --root is required: the folder holding {LABELS}(.gz) and {METADATA}(.gz) "
                       "from PhysioNet MIMIC-CXR-JPG")
    root = c.check_root(root, metadata_only, SOURCE)
    labels = c.read_csv(_find(root, LABELS), "MIMIC-CXR labels", ("subject_id", "study_id", "Pneumothorax"))
    meta = c.read_csv(_find(root, METADATA), "MIMIC-CXR metadata", ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    pool = eligible(meta, labels)
    log.info("%s: eligible frontal %d positives, %d negatives", SOURCE, int(pool["label"].sum()),
             int((pool["label"] == 0).sum()))
    target = c.sample_target(pool, n, positives, seed, SOURCE)
    if not metadata_only:
        c.check_images(root, target["image"], SOURCE)
    return {f"{DOMAIN}.test": c.to_manifest(target, DOMAIN)}


def _find(root: Path, name: str) -> Path:
    found = c.find_file(root, (name, f"{name}.gz"))
    if found is None:
        raise DgxError(f"{SOURCE}: {root / name}(.gz) not found; download it from PhysioNet MIMIC-CXR-JPG into --root")
    return found


def eligible(meta: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Frontal images joined to their study's labels; uncertain pneumothorax dropped."""
    keys = ["subject_id", "study_id"]
    labels = labels[keys + ["Pneumothorax"]].drop_duplicates(keys)
    frontal = meta[meta["ViewPosition"].astype(str).isin(FRONTAL)]
    pool = frontal.merge(labels, on=keys, how="inner")
    ptx = pd.to_numeric(pool["Pneumothorax"], errors="coerce")
    pool = pool[(ptx == 1) | ~ptx.isin([1, -1])].copy()
    pool["label"] = (ptx[pool.index] == 1).astype(int)
    subject = pool["subject_id"].astype("int64").astype(str)
    study = pool["study_id"].astype("int64").astype(str)
    pool["image"] = "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + pool["dicom_id"].astype(str) + ".jpg"
    pool["patient_id"] = subject
    pool["view"] = pool["ViewPosition"].astype(str)
    return pool.reset_index(drop=True)
