"""Manifests: one CSV per (domain, split) listing the images of a prepared dataset.

A manifest is the hand-off between ``dgx data prepare`` (which curates real
datasets from their metadata) and the loaders (which read pixels). Paths are
relative to the dataset root, so a manifest built with ``--metadata-only`` on
one machine stays valid on another that holds the images.

Columns (:data:`COLUMNS`):

- ``image``: path relative to the dataset root.
- ``label``: 1 = pneumothorax, 0 = not.
- ``domain``: e.g. ``cxr-p``, ``chestx-ray8-age``, ``chexpert``, ``chexpert-age``, ``mimic-cxr``.
- ``split``: ``train`` | ``val`` | ``test`` | ``pool`` (the train+val pool the ``official`` profile
  redraws its split from per seed; CXR-P's 951 gaze images).
- ``patient_id``, ``age`` (years; empty where unknown), ``sex`` (``M``/``F``/empty), ``view`` (``PA``/``AP``/...).
- ``abnormality``: empty, ``rle:<ImageId>`` (a row key of the SIIM RLE CSV) or a relative path to a mask PNG.
- ``lung``: empty or a relative path to a user-supplied lung mask.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from dgx.errors import DgxError
from dgx.runs import atomic_write

COLUMNS = ("image", "label", "domain", "split", "patient_id", "age", "sex", "view", "abnormality", "lung")
SPLITS = ("train", "val", "test", "pool")
_TEXT = ("image", "domain", "split", "patient_id", "sex", "view", "abnormality", "lung")


def validate(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Check a manifest's columns and values; return it with canonical dtypes and column order.

    ``where`` names the file or source in the error message.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DgxError(f"{where}: manifest is missing column(s) {', '.join(missing)}; "
                       f"a manifest needs {', '.join(COLUMNS)}")
    out = df.loc[:, list(COLUMNS)].copy()
    for col in _TEXT:
        out[col] = out[col].fillna("").astype(str)
    label = pd.to_numeric(out["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DgxError(f"{where}: column label must be 0 or 1, found {out['label'].iloc[row]!r} in row {row + 1}")
    out["label"] = label.astype(int)
    age = pd.to_numeric(out["age"], errors="coerce")
    bad = age.isna() & out["age"].notna() & (out["age"].astype(str).str.strip() != "")
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise DgxError(f"{where}: column age must be a number or empty, found {out['age'].iloc[row]!r} in row {row + 1}")
    out["age"] = age.astype(float)
    bad_split = ~out["split"].isin(SPLITS)
    if bad_split.any():
        value = out["split"][bad_split].iloc[0]
        raise DgxError(f"{where}: column split must be one of {', '.join(SPLITS)}, found {value!r}")
    empty = (out["image"] == "") | (out["domain"] == "")
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        raise DgxError(f"{where}: columns image and domain must not be empty (row {row + 1})")
    return out.reset_index(drop=True)


def _check_key(key: str, df: pd.DataFrame) -> None:
    domain, sep, split = key.rpartition(".")
    if not sep or not domain or split not in SPLITS:
        raise DgxError(f"manifest key {key!r} must look like '<domain>.<split>' with split in {', '.join(SPLITS)}")
    for col, want in (("domain", domain), ("split", split)):
        other = sorted(set(df[col]) - {want})
        if other:
            raise DgxError(f"manifest {key!r} holds rows with {col} {other[0]!r}; every row must have {col} {want!r}")


def write_manifests(frames: Mapping[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write each frame to ``<out_dir>/<key>.csv`` (key = ``<domain>.<split>``), atomically.

    Every frame is validated before any file is written, and each file is written
    to a temporary name and renamed, so a crash never leaves a half-written manifest.
    """
    checked = {}
    for key, df in frames.items():
        checked[key] = validate(df, f"manifest {key!r}")
        _check_key(key, checked[key])
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DgxError(f"cannot create manifest folder {out_dir}: {exc.strerror}; pass a writable --out") from None
    paths = []
    for key, df in checked.items():
        path = out_dir / f"{key}.csv"
        with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
            df.to_csv(fh, index=False)
        paths.append(path)
    return paths


def read_manifest(path: Path) -> pd.DataFrame:
    """Read and validate one manifest CSV."""
    path = Path(path)
    if not path.is_file():
        raise DgxError(f"manifest {path} not found; create it with `dgx data prepare SOURCE`")
    dtypes = {col: str for col in _TEXT}
    try:
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={"age": [""], "label": [""]})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DgxError(f"manifest {path} is not a readable CSV ({exc}); rebuild it with `dgx data prepare`") from None
    return validate(df, str(path))


def summary(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per manifest: n, positives, mean age, min age and view counts (e.g. ``PA 2800, AP 1807``)."""
    rows = []
    for key, df in frames.items():
        age = pd.to_numeric(df["age"], errors="coerce")
        views = df["view"].fillna("").astype(str).replace("", "?").value_counts()
        rows.append({
            "manifest": key,
            "n": len(df),
            "positives": int(pd.to_numeric(df["label"]).sum()),
            "mean_age": float(age.mean()) if age.notna().any() else float("nan"),
            "min_age": float(age.min()) if age.notna().any() else float("nan"),
            "views": ", ".join(f"{v} {c}" for v, c in views.items()),
        })
    return pd.DataFrame(rows, columns=["manifest", "n", "positives", "mean_age", "min_age", "views"]).set_index("manifest")
