"""Manifests: validation, atomic writes, round trips and summaries; the source registry."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from dgx.errors import DgxError
from dgx.prep.manifest import COLUMNS, read_manifest, summary, validate, write_manifests
from dgx.prep.sources import SOURCES, Source, get_source


def frame(domain="chexpert", split="test", n=4) -> pd.DataFrame:
    return pd.DataFrame({
        "image": [f"train/patient{i:05d}/study1/view1_frontal.jpg" for i in range(n)],
        "label": [1, 0, 0, 1][:n],
        "domain": domain,
        "split": split,
        "patient_id": [f"{i:05d}" for i in range(n)],  # leading zeros must survive a round trip
        "age": [70.0, float("nan"), 55.0, 81.0][:n],
        "sex": ["F", "M", "", "F"][:n],
        "view": ["PA", "AP", "AP", ""][:n],
        "abnormality": ["rle:1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.878", "", "", "masks/3.png"][:n],
        "lung": ["", "", "lungs/2.png", ""][:n],
    })


def test_round_trip_keeps_values_and_types(tmp_path):
    frames = {"chexpert.test": frame(), "cxr-p.train": frame("cxr-p", "train")}
    paths = write_manifests(frames, tmp_path / "m")
    assert [p.name for p in paths] == ["chexpert.test.csv", "cxr-p.train.csv"]
    back = read_manifest(paths[0])
    assert tuple(back.columns) == COLUMNS
    pd.testing.assert_frame_equal(back, validate(frames["chexpert.test"], "x"))
    assert back["patient_id"].tolist() == ["00000", "00001", "00002", "00003"]
    assert back["abnormality"].iloc[1] == "" and math.isnan(back["age"].iloc[1])
    assert back["label"].dtype.kind == "i"


def test_atomic_write_replaces_and_leaves_no_tmp(tmp_path):
    out = tmp_path / "m"
    write_manifests({"chexpert.test": frame(n=4)}, out)
    write_manifests({"chexpert.test": frame(n=2)}, out)
    assert [p.name for p in out.iterdir()] == ["chexpert.test.csv"]
    assert len(read_manifest(out / "chexpert.test.csv")) == 2


def test_invalid_frame_writes_nothing(tmp_path):
    bad = frame().drop(columns=["label"])
    with pytest.raises(DgxError, match="label"):
        write_manifests({"chexpert.test": frame(), "mimic-cxr.test": bad.assign(domain="mimic-cxr")}, tmp_path / "m")
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_missing_columns_name_where_and_which():
    with pytest.raises(DgxError) as err:
        validate(frame().drop(columns=["age", "lung"]), "nih.csv")
    msg = str(err.value)
    assert "nih.csv" in msg and "age" in msg and "lung" in msg and "\n" not in msg


@pytest.mark.parametrize("column,value,needle", [("label", 2, "label"), ("split", "dev", "split"),
                                                 ("age", "old", "age"), ("image", "", "image")])
def test_bad_values_are_user_errors(column, value, needle):
    df = frame()
    df[column] = df[column].astype(object)
    df.loc[1, column] = value
    with pytest.raises(DgxError, match=needle):
        validate(df, "where.csv")


def test_key_must_match_rows(tmp_path):
    with pytest.raises(DgxError, match="domain"):
        write_manifests({"mimic-cxr.test": frame()}, tmp_path)
    with pytest.raises(DgxError, match="<domain>.<split>"):
        write_manifests({"chexpert": frame()}, tmp_path)


def test_read_missing_or_broken_manifest(tmp_path):
    with pytest.raises(DgxError, match="not found"):
        read_manifest(tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text("image,label\na.png,1\n")
    with pytest.raises(DgxError, match="missing column"):
        read_manifest(tmp_path / "x.csv")


def test_summary_counts_ages_and_views():
    stats = summary({"chexpert.test": frame()})
    row = stats.loc["chexpert.test"]
    assert row.n == 4 and row.positives == 2
    assert row.mean_age == pytest.approx((70 + 55 + 81) / 3) and row.min_age == 55
    assert row.views == "AP 2, PA 1, ? 1"


def test_registry_lists_sources_and_rejects_unknown():
    assert {"chestxray8", "chexpert", "mimic"} <= set(SOURCES)
    assert all(isinstance(s, Source) and s.name == name for name, s in SOURCES.items())
    with pytest.raises(DgxError, match="chestxray8, chexpert"):
        get_source("nih")
