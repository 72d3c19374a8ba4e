"""End to end on tiny fixtures in each source's folder layout:
prepare (siim DICOM, chestxray8 PNG, chexpert JPEG) -> cache -> load_real -> train 1 epoch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dgx.data.real import load_real
from dgx.errors import DgxError
from dgx.prep.cache_builder import build_cache
from dgx.prep.sources import prepare_source
from tests.test_siim import write_siim_tree

SPLITS = {"train": (24, 12), "val": (12, 6), "test": (12, 6), "trainval_full": (10, 5), "test_full": (6, 3)}
SIZE = 32


def _bright_square(rng, label: int, n: int = 64) -> np.ndarray:
    img = rng.integers(20, 120, size=(n, n)).astype(np.uint8)
    if label:
        img[8:22, 8:20] = 240
    return img


def write_nih(root, rng, n=12):
    """NIH layout: Data_Entry_2017_v2020.csv + images/<Image Index> (PNG)."""
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"{i:08d}_000.png"
        label = int(i % 2 == 0)
        Image.fromarray(_bright_square(rng, label)).save(root / "images" / name)
        rows.append({"Image Index": name, "Finding Labels": "Pneumothorax" if label else "No Finding",
                     "Patient ID": i, "Patient Age": 60, "Patient Gender": "MF"[i % 2], "View Position": "PA"})
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)


def write_chexpert(root, rng, n=12):
    """CheXpert layout: CheXpert-v1.0-small/train.csv + .../train/patientNNNNN/study1/view1_frontal.jpg."""
    rows = []
    for i in range(n):
        rel = f"CheXpert-v1.0-small/train/patient{i:05d}/study1/view1_frontal.jpg"
        (root / rel).parent.mkdir(parents=True)
        label = int(i % 2 == 0)
        Image.fromarray(_bright_square(rng, label)).save(root / rel, quality=95)
        rows.append({"Path": rel, "Sex": "Female", "Age": 70 + i, "Frontal/Lateral": "Frontal", "AP/PA": "AP",
                     "Pneumothorax": float(label) if label else None})
    pd.DataFrame(rows).to_csv(root / "CheXpert-v1.0-small" / "train.csv", index=False)


@pytest.fixture
def prepared(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    manifests, cache = data / "manifests", data / "cache"
    siim_root = tmp_path / "siim" / "dicom"
    splits, rle = write_siim_tree(siim_root, SPLITS)
    nih_root, chx_root = tmp_path / "nih", tmp_path / "chexpert"
    write_nih(nih_root, rng)
    write_chexpert(chx_root, rng)
    siim = prepare_source("siim", siim_root, manifests, options={"splits": str(splits), "rle": str(rle)})
    nih = prepare_source("chestxray8", nih_root, manifests, options={"n": "8", "positives": "4"})
    chx = prepare_source("chexpert", chx_root, manifests, options={"n": "6", "positives": "3"})
    build_cache([p for p, _ in siim.values()], siim_root, SIZE, cache, rle=rle)
    build_cache([p for p, _ in nih.values()], nih_root, SIZE, cache)
    return {"data": data, "chx": (chx, chx_root), "cache": cache}


def test_prepare_cache_load_train(prepared, tmp_path, caplog):
    from dgx.spec import TrainConfig
    from dgx.train import train

    data = prepared["data"]
    # chexpert manifests exist but are not cached yet: those targets are skipped with a warning.
    assert sorted(load_real("cxr-p", {}, SIZE, data).targets) == ["chestx-ray8-age"]
    assert "dgx data cache --manifests" in caplog.text and "CHEXPERT_ROOT" in caplog.text
    chx, chx_root = prepared["chx"]
    build_cache([p for p, _ in chx.values()], chx_root, SIZE, prepared["cache"])
    bundle = load_real("cxr-p", {}, SIZE, data)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (24, 12, 12)
    assert int(bundle.train.labels.sum()) == 12 and bundle.image_size == SIZE
    assert sorted(bundle.targets) == ["chestx-ray8-age", "chexpert", "chexpert-age"]
    assert [len(bundle.targets[t]) for t in sorted(bundle.targets)] == [8, 6, 6]
    assert isinstance(bundle.train.images, np.memmap)
    # Subgroup keys come from the manifest rows the cache kept, in cache order.
    from dgx.data.groups import age_bands
    from dgx.prep.manifest import read_manifest

    chx_rows = read_manifest(data / "manifests" / "chexpert.test.csv")
    assert list(bundle.targets["chexpert"].groups["age"]) == list(age_bands(chx_rows["age"]))
    assert set(bundle.targets["chexpert"].groups["age"]) <= {"50-70", ">70"}  # the fixture's ages are 70, 71, ...
    assert list(bundle.targets["chexpert"].groups["view"]) == list(chx_rows["view"].replace("", "unknown"))
    pos = bundle.train.labels == 1
    assert not bundle.train.masks["abnormality"][pos].all() and bundle.train.masks["periphery"][~pos].all()
    for split in bundle.targets.values():
        assert all(split.mask(k).all() for k in ("abnormality", "scaled", "periphery"))
    full = load_real("cxr-p-full", {}, SIZE, data)
    assert (len(full.train), len(full.val), len(full.test)) == (8, 2, 6)

    cfg = TrainConfig(method="rrr", mask="abnormality", dataset="cxr-p", model="resnet18", weights="none",
                      image_size=SIZE, epochs=1, batch_size=8, lam=1.0)
    result = train(cfg, bundle, tmp_path / "run", device="cpu", progress=False)
    assert set(result.auroc) == {"cxr-p", "chestx-ray8-age", "chexpert", "chexpert-age"}
    assert all(0.0 <= v <= 1.0 for v in result.auroc.values())
    assert 0.0 <= result.val_auroc <= 1.0 and len(result.history) == 1


def test_missing_pieces_say_what_to_run(prepared, tmp_path):
    with pytest.raises(DgxError, match="dgx data prepare siim"):
        load_real("cxr-p", {}, SIZE, tmp_path / "empty")
    with pytest.raises(DgxError, match=r"no 64 px cache .*dgx data cache .*--size 64"):
        load_real("cxr-p", {}, 64, prepared["data"])
    with pytest.raises(DgxError, match="choose from"):
        load_real("cxr-p", {"bogus": "1"}, SIZE, prepared["data"])
    # An edited manifest no longer matches its cache: never serve stale pixels.
    path = prepared["data"] / "manifests" / "cxr-p.val.csv"
    path.write_text(path.read_text().rstrip("\n").rsplit("\n", 1)[0] + "\n")
    with pytest.raises(DgxError, match="cxr-p.val.csv"):
        load_real("cxr-p", {}, SIZE, prepared["data"])
