"""SIIM source: the paper's split lists, the seeded stratified fallback, DICOM tags and errors.

Also holds the tiny-fixture writers (DICOM tree, PNG, RLE table) that the cache and
pipeline tests reuse.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dgx.errors import DgxError
from dgx.masks.rle import encode_rle
from dgx.prep.sources import get_source


def reference_dir() -> Path | None:
    for path in (Path(__file__).resolve().parents[2] / "shared" / "reference",
                 Path(os.environ.get("DGX_REFERENCE_DIR", "/nonexistent"))):
        if (path / "cxr_p_splits.csv").is_file():
            return path
    return None


def _splits_csv() -> Path:
    ref = reference_dir()
    if ref is None:
        pytest.skip("reference data (../shared/reference/cxr_p_splits.csv) absent; set DGX_REFERENCE_DIR")
    return ref / "cxr_p_splits.csv"


# ---------------------------------------------------------------- fixture writers

def write_dicom(path: Path, pixels: np.ndarray, *, uid: str, age: str = "045Y", sex: str = "F", view: str = "PA",
                patient: str = "p1", photometric: str = "MONOCHROME2") -> None:
    """A minimal valid DICOM (uint16 MONOCHROME2 by default), as SIIM ships them."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.PatientAge, ds.PatientSex, ds.ViewPosition, ds.PatientID = age, sex, view, patient
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def lesion(size: int, k: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[4 + k % 8: 14 + k % 8, 6: 12 + k % 5] = True  # upper-left: an apical pocket
    return m


def write_siim_tree(root: Path, n_per_split: dict[str, tuple[int, int]], size: int = 64,
                    seed: int = 0) -> tuple[Path, Path]:
    """SIIM layout ``Study/Series/SOP.dcm`` + a split list + an RLE table; returns (splits, rle)."""
    rng = np.random.default_rng(seed)
    rows, rle_rows, k = [], [], 0
    for split, (n, pos) in n_per_split.items():
        for i in range(n):
            k += 1
            uid = f"1.2.3.4.{k}"
            rel = f"1.2.3.2.{k}/1.2.3.3.{k}/{uid}.dcm"
            label = int(i < pos)
            img = rng.integers(200, 3000, size=(size, size))
            if label:
                m = lesion(size, k)
                img[m] = 4000  # the signal: bright pocket
                rle_rows.append((uid, encode_rle(m)))
            else:
                rle_rows.append((uid, "-1"))
            write_dicom(root / rel, img, uid=uid, age=f"{30 + k:03d}Y", sex="MF"[k % 2], patient=f"p{k}")
            rows.append((split, uid, rel, label))
    splits = root.parent / "splits.csv"
    pd.DataFrame(rows, columns=["split", "image_id", "dicom_path", "label"]).to_csv(splits, index=False)
    rle = root.parent / "rle.csv"
    pd.DataFrame(rle_rows, columns=["ImageId", " EncodedPixels"]).to_csv(rle, index=False)
    return splits, rle


TINY = {"train": (12, 6), "val": (8, 4), "test": (8, 4), "trainval_full": (10, 5), "test_full": (6, 3)}


# ---------------------------------------------------------------- paper lists (metadata only)

def test_paper_split_counts():
    frames = get_source("siim").prepare(None, metadata_only=True, seed=0, options={"splits": str(_splits_csv())})
    counts = {k: (len(f), int(f["label"].sum())) for k, f in frames.items()}
    assert counts["cxr-p.train"] == (947, 208)
    assert counts["cxr-p.val"] == (223, 49)
    assert counts["cxr-p.test"] == (4607, 1009)
    assert counts["cxr-p-full.test"] == (2135, 477)
    # 80/20 stratified: round(0.2 * 1902) = 380 positives and round(0.2 * 6638) = 1328 negatives to val.
    assert counts["cxr-p-full.train"] == (6832, 1522)
    assert counts["cxr-p-full.val"] == (1708, 380)
    assert counts["cxr-p-full.train"][1] + counts["cxr-p-full.val"][1] == 1902
    tr, va = frames["cxr-p-full.train"], frames["cxr-p-full.val"]
    assert abs(tr["label"].mean() - va["label"].mean()) < 0.002  # per-fold class balance
    assert not set(tr["image"]) & set(va["image"])
    pos = frames["cxr-p.train"]
    assert (pos["abnormality"] == "").sum() == 947 - 208
    assert pos.loc[pos["label"] == 1, "abnormality"].str.startswith("rle:1.2.276").all()
    assert pos["image"].str.endswith(".dcm").all() and pos["image"].str.count("/").eq(2).all()
    assert pos["age"].isna().all() and (pos["sex"] == "").all()


def test_full_split_is_seeded():
    opts = {"splits": str(_splits_csv())}
    a = get_source("siim").prepare(None, metadata_only=True, seed=0, options=opts)
    b = get_source("siim").prepare(None, metadata_only=True, seed=0, options=opts)
    c = get_source("siim").prepare(None, metadata_only=True, seed=1, options=opts)
    assert a["cxr-p-full.val"]["image"].tolist() == b["cxr-p-full.val"]["image"].tolist()
    assert a["cxr-p-full.val"]["image"].tolist() != c["cxr-p-full.val"]["image"].tolist()
    assert int(c["cxr-p-full.val"]["label"].sum()) == 380
    assert a["cxr-p.test"].equals(c["cxr-p.test"])  # the imported lists do not depend on the seed


def test_drawn_splits_without_list():
    pytest.importorskip("torchxrayvision")
    frames = get_source("siim").prepare(None, metadata_only=True, seed=3, options={})
    counts = {k: (len(f), int(f["label"].sum())) for k, f in frames.items()}
    assert counts == {"cxr-p.train": (947, 208), "cxr-p.val": (223, 49), "cxr-p.test": (4607, 1009),
                      "cxr-p-full.train": (6832, 1522), "cxr-p-full.val": (1708, 380),
                      "cxr-p-full.test": (2135, 477)}
    cxrp = [set(frames[f"cxr-p.{s}"]["image"]) for s in ("train", "val", "test")]
    assert not (cxrp[0] & cxrp[1]) and not (cxrp[0] & cxrp[2]) and not (cxrp[1] & cxrp[2])
    assert frames["cxr-p.train"]["image"].str.fullmatch(r"[\d.]+\.dcm").all()  # <ImageId>.dcm placeholders
    again = get_source("siim").prepare(None, metadata_only=True, seed=3, options={})
    assert again["cxr-p.val"]["image"].tolist() == frames["cxr-p.val"]["image"].tolist()


# ---------------------------------------------------------------- images present

def test_dicom_tags_and_png_fallback(tmp_path):
    root = tmp_path / "siim"
    splits, rle = write_siim_tree(root, TINY)
    # One image as PNG instead of DICOM (the Kaggle PNG release's layout: <ImageId>.png).
    from PIL import Image

    lst = pd.read_csv(splits)
    uid, rel = lst["image_id"].iloc[0], lst["dicom_path"].iloc[0]
    (root / rel).unlink()
    (root / "png").mkdir()
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(root / "png" / f"{uid}.png")
    frames = get_source("siim").prepare(root, metadata_only=False, seed=0,
                                        options={"splits": str(splits), "rle": str(rle)})
    train = frames["cxr-p.train"].set_index("image")
    assert f"png/{uid}.png" in train.index
    row = train.loc[lst["dicom_path"].iloc[1]]
    assert row["age"] == 32 and row["sex"] == "M" and row["view"] == "PA" and row["patient_id"] == "p2"
    assert np.isnan(train.loc[f"png/{uid}.png", "age"])
    assert sum(len(f) for k, f in frames.items() if not k.endswith(".pool")) == sum(n for n, _ in TINY.values())
    assert len(frames["cxr-p-full.val"]) == 2 and int(frames["cxr-p-full.val"]["label"].sum()) == 1


def test_missing_image_and_root_and_bad_dicom(tmp_path):
    root = tmp_path / "siim"
    splits, rle = write_siim_tree(root, {"train": (2, 1), "val": (2, 1), "test": (2, 1)})
    opts = {"splits": str(splits), "rle": str(rle)}
    with pytest.raises(DgxError, match="--root"):
        get_source("siim").prepare(None, metadata_only=False, seed=0, options=opts)
    rel = pd.read_csv(splits)["dicom_path"].iloc[0]
    (root / rel).write_bytes(b"this is not DICOM at all")
    with pytest.raises(DgxError) as err:
        get_source("siim").prepare(root, metadata_only=False, seed=0, options=opts)
    assert str(root / rel) in str(err.value) and "\n" not in str(err.value)
    (root / rel).unlink()
    with pytest.raises(DgxError, match="not found") as err:
        get_source("siim").prepare(root, metadata_only=False, seed=0, options=opts)
    assert str(root / rel) in str(err.value)


def test_bad_options(tmp_path):
    with pytest.raises(DgxError, match="choose from"):
        get_source("siim").prepare(None, metadata_only=True, seed=0, options={"nope": "1"})
    with pytest.raises(DgxError, match="val_fraction"):
        get_source("siim").prepare(None, metadata_only=True, seed=0, options={"val_fraction": "2"})
    bad = tmp_path / "s.csv"
    bad.write_text("split,image_id,dicom_path,label\nweird,1,1.dcm,0\n")
    with pytest.raises(DgxError, match="unknown split 'weird'"):
        get_source("siim").prepare(None, metadata_only=True, seed=0, options={"splits": str(bad)})
