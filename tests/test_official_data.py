"""``--profile official``'s data, switch by switch: CXR-P Full's pool and per-seed split, periphery masks on the
annotated positives only, the released decoding, and the profile's fields themselves."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dgx.data.base import Bundle, Split, unconstrained
from dgx.data.released import for_profile, pool_of
from dgx.errors import DgxError
from dgx.profiles import PROFILES, Profile
from tests.helpers import reference_dir
from tests.test_siim import write_dicom, write_siim_tree

OFFICIAL, PAPER = PROFILES["official"], PROFILES["paper"]
FULL = {"trainval_full": (10, 4), "test_full": (4, 2)}


def coded(labels) -> Split:
    """A split whose image i holds i in its two pixels (so a drawn subset names its rows)."""
    i = np.arange(len(labels))
    images = np.stack([i // 256, i % 256], 1).astype(np.uint8)[:, :, None]
    return Split(images, np.asarray(labels, dtype=np.int64), released_images=images)


def rows_of(split: Split) -> np.ndarray:
    return split.images[:, 0, 0].astype(int) * 256 + split.images[:, 1, 0]


def test_official_full_split_is_the_released_split_of_the_list():
    from sklearn.model_selection import StratifiedShuffleSplit

    from dgx.prep.sources.siim import prepare

    ref = reference_dir()
    frames = prepare(None, metadata_only=True, seed=0, options={"splits": str(ref / "cxr_p_splits.csv")})
    listed = pd.read_csv(ref / "cxr_p_splits.csv")
    listed = listed[listed["split"] == "trainval_full"]
    pool = frames["cxr-p-full.pool"]
    assert pool["image"].tolist() == listed["dicom_path"].tolist()  # the list's own order, not re-sorted
    assert len(pool) == 8540 and int(pool["label"].sum()) == 1902
    tiny = coded([0, 1])
    bundle = Bundle("cxr-p-full", "cxr-p-full", tiny, tiny, tiny, {}, "fp", pool=coded(pool["label"]))
    for seed in range(10):
        _, val = next(StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
                      .split(np.zeros(len(listed)), listed["label"]))
        drawn = for_profile(bundle, OFFICIAL, seed, "none")
        assert set(pool["image"].iloc[rows_of(drawn.val)]) == set(listed["dicom_path"].iloc[val]), seed
        assert len(drawn.train) + len(drawn.val) == 8540


def test_official_full_needs_its_listed_pool():
    tiny = Split(np.zeros((4, 2, 1), np.uint8), np.array([0, 1, 0, 1]))
    bundle = Bundle("cxr-p-full", "cxr-p-full", tiny, tiny, tiny, {}, "fp")
    with pytest.raises(DgxError, match="8,540 train.val images .trainval_full. in the list's order") as err:
        pool_of(bundle)  # never the halves redrawn in their own (path) order
    assert "\n" not in str(err.value) and "cxr-p-full.pool.csv" in str(err.value)


def test_only_the_annotated_positives_are_the_released_periphery():
    """The released lung-mask path masks 1,206 of CXR-P Full's 1,902 positives and all 205 of CXR-P's pool."""
    ref = reference_dir("lung_periphery_annotated_ids.csv")
    annotated = set(pd.read_csv(ref / "lung_periphery_annotated_ids.csv")["image_id"])
    listed = pd.read_csv(ref / "cxr_p_splits.csv")
    positives = listed[listed["label"] == 1]
    for split, n, masked in (("trainval_full", 1902, 1206), ("trainval_gaze", 205, 205)):
        ids = positives.loc[positives["split"] == split, "image_id"]
        assert (len(ids), int(ids.isin(annotated).sum())) == (n, masked)


@pytest.fixture
def full(tmp_path):
    """A tiny SIIM tree prepared and cached as CXR-P Full, half its pool's positives annotated."""
    from dgx.prep.cache_builder import build_cache
    from dgx.prep.sources import prepare_source

    root = tmp_path / "siim"
    splits, rle = write_siim_tree(root, FULL)
    written = prepare_source("siim", root, tmp_path / "manifests", seed=0,
                             options={"splits": str(splits), "rle": str(rle)})
    listed = pd.read_csv(splits)
    annotated = listed.loc[(listed["split"] == "trainval_full") & (listed["label"] == 1), "image_id"].iloc[::2]
    ids = tmp_path / "ids.csv"
    annotated.to_frame().to_csv(ids, index=False)
    lungs = tmp_path / "lungs"  # user lung masks: no atlas to load
    lungs.mkdir()
    lung = np.zeros((64, 64), np.uint8)
    lung[8:56, 6:28] = lung[8:56, 36:58] = 255
    for uid in listed.loc[listed["label"] == 1, "image_id"]:
        Image.fromarray(lung).save(lungs / f"{uid}.png")
    manifests = [path for path, _ in written.values()]
    folder = build_cache(manifests, root, 32, tmp_path / "cache", rle=rle, periphery_ids=ids, lung_dir=lungs)
    return {"root": root, "rle": rle, "manifests": manifests, "folder": folder, "annotated": set(annotated),
            "lungs": lungs,
            "options": {"manifest_dir": str(tmp_path / "manifests"), "cache_dir": str(tmp_path / "cache")}}


def test_official_periphery_masks_only_the_annotated_positives(full, tmp_path):
    from dgx.data.cache import load_cache
    from dgx.data.real import load_real
    from dgx.prep.cache_builder import build_cache

    arrays = load_cache(full["folder"])
    rows = pd.read_csv(full["folder"] / "rows.csv")
    mine = rows["image"].map(lambda p: p.rsplit("/", 1)[-1][:-4]).isin(full["annotated"]).to_numpy()
    positive = rows["label"].to_numpy() == 1
    assert not unconstrained(arrays["periphery"][positive]).any()  # dgx: every positive
    assert np.array_equal(unconstrained(arrays["periphery_released"]), ~(positive & mine))  # released: annotated
    assert np.array_equal(arrays["periphery_released"][mine], arrays["periphery"][mine])
    bundle = load_real("cxr-p-full", full["options"], 32, tmp_path)
    for seed in (0, 1):
        train = for_profile(bundle, OFFICIAL, seed, "periphery").train
        assert np.array_equal(train.masks["periphery"], train.masks["periphery_released"])
        assert (~unconstrained(train.masks["periphery"])).sum() < (train.labels == 1).sum()
    paper = for_profile(bundle, PAPER, 0, "periphery").train
    assert not unconstrained(paper.masks["periphery"][paper.labels == 1]).any()
    build_cache(full["manifests"], full["root"], 32, tmp_path / "plain", rle=full["rle"], lung_dir=full["lungs"])
    plain = load_real("cxr-p-full", {**full["options"], "cache_dir": str(tmp_path / "plain")}, 32, tmp_path)
    with pytest.raises(DgxError, match="--periphery-ids lung_periphery_annotated_ids.csv"):
        for_profile(plain, OFFICIAL, 0, "periphery")
    bad = tmp_path / "bad.csv"
    bad.write_text("id\n1\n")
    with pytest.raises(DgxError, match="lacks column.s. image_id"):
        build_cache(full["manifests"], full["root"], 32, tmp_path / "bad", periphery_ids=bad)


def test_released_decoding_is_uint8_and_the_torchvision_resize(tmp_path):
    from dgx.prep.decode import decode_both

    ramp = np.tile(np.linspace(30, 200, 256).round(), (256, 1))  # a DICOM spanning 30-200
    write_dicom(tmp_path / "a.dcm", ramp, uid="1.2.9")
    stretch, released, shape = decode_both(tmp_path / "a.dcm", 64)
    expected = np.asarray(Image.fromarray(ramp.astype(np.uint8)).resize((64, 64), Image.Resampling.BILINEAR))
    assert shape == (256, 256) and np.array_equal(released, expected)  # np.uint8, then PIL bilinear, no gap
    assert np.abs(stretch.astype(int) - released).max() == 54  # dgx stretches 30-200 to 0-255
    write_dicom(tmp_path / "wrap.dcm", np.full((4, 4), 300), uid="1.2.10")
    assert decode_both(tmp_path / "wrap.dcm", 4)[1].max() == 44  # np.uint8(pixel_array) wraps above 8 bits
    grey = (np.arange(600 * 600).reshape(600, 600) % 251).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "b.png")
    stretch, released, _ = decode_both(tmp_path / "b.png", 64)  # 8-bit: only the resize differs
    assert np.array_equal(released, np.asarray(Image.fromarray(grey).resize((64, 64), Image.Resampling.BILINEAR)))
    assert not np.array_equal(stretch, released)  # dgx's reducing_gap=2.0


def test_official_trains_and_scores_on_the_released_decoding(full, tmp_path):
    from dgx.data.real import load_real

    bundle = load_real("cxr-p-full", full["options"], 32, tmp_path)
    rows = pd.read_csv(full["folder"] / "rows.csv")
    first = rows.index[rows["label"] == 0][0]
    import pydicom

    pixels = pydicom.dcmread(full["root"] / rows["image"].iloc[first]).pixel_array
    expected = np.asarray(Image.fromarray(np.uint8(pixels)).resize((32, 32), Image.Resampling.BILINEAR))
    from dgx.data.cache import load_cache

    assert np.array_equal(load_cache(full["folder"])["images_released"][first], expected)
    official, paper = for_profile(bundle, OFFICIAL, 0, "none"), for_profile(bundle, PAPER, 0, "none")
    assert np.array_equal(official.test.images, bundle.test.released_images)
    assert not np.array_equal(official.test.images, bundle.test.images) and paper.test is bundle.test
    pool = {im.tobytes() for im in bundle.pool.released_images}
    assert all(im.tobytes() in pool for part in (official.train, official.val) for im in part.images)
    old = dataclasses.replace(bundle, test=dataclasses.replace(bundle.test, released_images=None))
    with pytest.raises(DgxError, match="rebuild it with `dgx data cache`"):
        for_profile(old, OFFICIAL, 0, "none")


def test_every_switch_is_documented_and_differs_between_the_profiles():
    import dgx.profiles

    fields = [f.name for f in dataclasses.fields(Profile) if f.name != "name"]
    assert {"decode", "last_batch", "precision"} <= set(fields)
    for name in fields:
        assert f"``{name}``\n" in dgx.profiles.__doc__, name
        assert getattr(OFFICIAL, name) != getattr(PAPER, name), name
    assert (OFFICIAL.decode, OFFICIAL.last_batch, OFFICIAL.precision) == ("released", "keep", "fp32")
    assert (PAPER.decode, PAPER.last_batch, PAPER.precision) == ("stretch", "drop", "bf16")
