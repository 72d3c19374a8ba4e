"""CheXpert targets, ``chexpert.test`` and ``chexpert-age.test`` (paper §3).

Frontal views only. Positives have Pneumothorax == 1; negatives have it neither
1 nor -1 (uncertain), i.e. 0 or blank. ``chexpert`` has no age restriction (a
shift of hospital); ``chexpert-age`` keeps ages strictly above the median of the
CSV's ages (62), adding a shift of age. Each holds 4,607 images, 1,014 positive.

``--opt protocol=official`` reproduces the paper's code release instead. Its
split files are named for mean ages 51.126 (hospital) and 78.561 (hospital+age);
this metadata gives both exactly when negatives are frontal "No Finding" images
and ``chexpert`` takes the first 1,014 positives and 3,593 negatives in CSV
order while ``chexpert-age`` takes the oldest (ages > the median). The default
seeded draws have mean ages ~60 and ~75.

Metadata: ``train.csv`` under ``--root`` (or under its ``CheXpert-v1.0-small/``
or ``CheXpert-v1.0/`` folder), else the copy torchxrayvision ships.

Image paths: the CSV's paths start with the dataset folder
(``CheXpert-v1.0-small/train/patient00001/...``). If ``--root`` contains that
folder, manifest paths keep it; otherwise (``--root`` is that folder, or
``--metadata-only`` without a root) the leading folder is dropped, so paths are
relative to the dataset folder: ``train/patient00001/study1/view1_frontal.jpg``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dgx.prep import curate as c

log = logging.getLogger("dgx")

SOURCE = "chexpert"
CSV_NAMES = ("train.csv", "CheXpert-v1.0-small/train.csv", "CheXpert-v1.0/train.csv")
NEEDED = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "Pneumothorax")
OPTIONS = {**c.SIZE_OPTIONS, **c.PROTOCOL_OPTION}
SEX = {"Female": "F", "Male": "M"}


def prepare(root: Path | None, *, metadata_only: bool, seed: int, options: dict[str, str]) -> dict[str, pd.DataFrame]:
    values = c.parse_options(options, OPTIONS, SOURCE)
    n, positives = c.target_size(values, SOURCE)
    official = c.parse_protocol(values, SOURCE) == "official"
    root = c.check_root(root, metadata_only, SOURCE)
    csv = c.find_file(root, CSV_NAMES) or c.shipped_csv("chexpert_train.csv.gz")
    meta = c.read_csv(csv, "CheXpert metadata", NEEDED + (("No Finding",) if official else ()))
    log.info("%s: metadata %s", SOURCE, csv)
    median = c.median_age(meta["Age"])
    pool = eligible(meta, root, no_finding_negatives=official)
    log.info("%s: median age %g; eligible frontal %d positives, %d negatives", SOURCE, median,
             int(pool["label"].sum()), int((pool["label"] == 0).sum()))
    frames = {}
    selections = {"chexpert": "first", "chexpert-age": "oldest"} if official else {}
    for domain, subset in (("chexpert", pool), ("chexpert-age", pool[pool["age"] > median])):
        how = selections.get(domain, "seeded")
        target = c.sample_target(subset, n, positives, seed, f"{SOURCE} ({domain})", how=how)
        if not metadata_only:
            c.check_images(root, target["image"], SOURCE)
        frames[f"{domain}.test"] = c.to_manifest(target, domain)
    return frames


def eligible(meta: pd.DataFrame, root: Path | None, no_finding_negatives: bool = False) -> pd.DataFrame:
    """Frontal images labelled pneumothorax (1) or not (0 or blank); uncertain (-1) dropped.

    With ``no_finding_negatives`` (the official protocol) negatives must also
    have "No Finding" == 1.
    """
    ptx = pd.to_numeric(meta["Pneumothorax"], errors="coerce")
    frontal = meta["Frontal/Lateral"].astype(str) == "Frontal"
    negative = ~ptx.isin([1, -1])
    if no_finding_negatives:
        negative &= pd.to_numeric(meta["No Finding"], errors="coerce") == 1
    keep = frontal & (ptx == 1) | frontal & negative
    pool = meta.loc[keep].copy()
    pool["label"] = (ptx[keep] == 1).astype(int)
    pool["image"] = relative_paths(pool["Path"].astype(str), root)
    pool["patient_id"] = pool["Path"].astype(str).str.extract(r"(patient\d+)", expand=False).fillna("")
    pool["age"] = pd.to_numeric(pool["Age"], errors="coerce").astype(float)
    pool["sex"] = pool["Sex"].map(SEX).fillna("")
    pool["view"] = pool["AP/PA"].fillna("").astype(str)
    return pool.reset_index(drop=True)


def relative_paths(paths: pd.Series, root: Path | None) -> pd.Series:
    """Drop the leading dataset folder unless ``root`` contains it (see the module docstring)."""
    parts = paths.str.partition("/")
    if root is not None:
        folders = set(parts[0][parts[1] != ""])
        if folders and all((root / folder).is_dir() for folder in folders):
            return paths
    return parts[2].where(parts[1] != "", paths)
