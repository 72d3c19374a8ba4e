"""Decoded-image cache: content key, atomic build, decoding, masks and bad-file handling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dgx.errors import DgxError
from dgx.masks.rle import abnormality_mask, load_rle_table
from dgx.prep.cache_builder import build_cache, decode_image, load_cache, read_index
from dgx.prep.manifest import read_manifest
from dgx.prep.sources import prepare_source
from tests.test_siim import lesion, write_dicom, write_siim_tree

SMALL = {"train": (4, 2), "val": (2, 1), "test": (2, 1)}


@pytest.fixture
def siim(tmp_path):
    root = tmp_path / "siim"
    splits, rle = write_siim_tree(root, SMALL)
    written = prepare_source("siim", root, tmp_path / "manifests", seed=0,
                             options={"splits": str(splits), "rle": str(rle)})
    return root, rle, [path for path, _ in written.values()]


def _no_temp(out):
    return [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_build_load_and_masks(siim, tmp_path):
    root, rle, manifests = siim
    out = tmp_path / "cache"
    path = build_cache(manifests, root, 32, out, rle=rle)
    arrays = load_cache(path)
    index = read_index(path)
    assert index["n"] == 8 and arrays["images"].shape == (8, 32, 32) and arrays["images"].dtype == np.uint8
    assert isinstance(arrays["images"], np.memmap) and not arrays["images"].flags.writeable
    rows = {k: read_manifest(p) for k, p in zip(("train", "val", "test"), manifests)}
    train = rows["train"]
    rng = index["manifests"]["cxr-p.train"]
    assert (rng["start"], rng["stop"]) == (0, 4)
    assert arrays["labels"][:4].tolist() == train["label"].tolist()
    table = load_rle_table(rle)
    for i, row in train.iterrows():
        if row["label"] == 1:
            want = abnormality_mask(table[row["abnormality"][4:]], 32, height=64, width=64)
            assert np.array_equal(arrays["abnormality"][i], want.astype(np.uint8))
            assert (arrays["scaled"][i] >= arrays["abnormality"][i]).all()
            assert (arrays["periphery"][i] >= arrays["abnormality"][i]).all()
            # The released geometry (resize the full-size mask, then > 0) only grows it.
            assert (arrays["abnormality_released"][i] >= arrays["abnormality"][i]).all()
            assert arrays["abnormality_released"][i].sum() > arrays["abnormality"][i].sum()
            assert 0 < arrays["periphery"][i].mean() < 1  # a band from the lung template, not all ones
            # The bright lesion is where the mask is: pixels there are brighter than elsewhere.
            m = arrays["abnormality"][i].astype(bool)
            assert arrays["images"][i][m].mean() > arrays["images"][i][~m].mean() + 50
        else:
            for kind in ("abnormality", "scaled", "periphery", "abnormality_released"):
                assert arrays[kind][i].all()
    assert _no_temp(out)


def test_key_changes_and_reuse(siim, tmp_path):
    root, rle, manifests = siim
    out = tmp_path / "cache"
    a = build_cache(manifests, root, 32, out, rle=rle)
    assert build_cache(manifests, root, 32, out, rle=rle) == a  # reused, not rebuilt
    b = build_cache(manifests, root, 24, out, rle=rle)
    assert b != a and load_cache(b)["images"].shape == (8, 24, 24)
    text = manifests[1].read_text().splitlines()
    manifests[1].write_text("\n".join(text[:-1]) + "\n")  # drop one val row
    c = build_cache(manifests, root, 32, out, rle=rle)
    assert c not in (a, b) and read_index(c)["n"] == 7
    assert sorted(p.name for p in out.iterdir()) == sorted({a.name, b.name, c.name})


def test_corrupt_image_fail_and_skip(siim, tmp_path):
    root, rle, manifests = siim
    bad = root / read_manifest(manifests[0])["image"].iloc[0]
    bad.write_bytes(b"DICM but not really")
    out = tmp_path / "cache"
    with pytest.raises(DgxError) as err:
        build_cache(manifests, root, 32, out, rle=rle, on_error="fail")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() or list(out.iterdir()) == []  # nothing half-written left
    path = build_cache(manifests, root, 32, out, rle=rle, on_error="skip")
    index = read_index(path)
    assert index["n"] == 7 and index["dropped"] == [str(bad.relative_to(root))]
    assert load_cache(path)["images"].shape[0] == 7 and index["manifests"]["cxr-p.train"]["stop"] == 3
    assert _no_temp(out)


def test_decode_dicom_png_jpeg(tmp_path):
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 60, (64, 1))  # 0..3780 left to right
    write_dicom(tmp_path / "a.dcm", ramp, uid="1.2.9")
    img, shape = decode_image(tmp_path / "a.dcm", 16)
    assert shape == (64, 64) and img[:, 0].max() < 20 and img[:, -1].min() > 235  # min-max to 0-255
    write_dicom(tmp_path / "inv.dcm", ramp, uid="1.2.10", photometric="MONOCHROME1")
    inv, _ = decode_image(tmp_path / "inv.dcm", 16)
    assert inv[:, 0].min() > 235 and inv[:, -1].max() < 20  # MONOCHROME1 inverted
    Image.fromarray((ramp // 16).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray((ramp // 16).astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    for name in ("a.png", "a.jpg"):
        out, shape = decode_image(tmp_path / name, 16)
        assert shape == (64, 64) and out[:, 0].max() < 20 and out[:, -1].min() > 215
    (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DgxError, match="junk.png"):
        decode_image(tmp_path / "junk.png", 16)
    (tmp_path / "text.dcm").write_text("hello")
    with pytest.raises(DgxError) as err:
        decode_image(tmp_path / "text.dcm", 16)
    assert "text.dcm is not a readable DICOM file" in str(err.value) and "\n" not in str(err.value)


def test_mask_size_mismatch(siim, tmp_path):
    root, rle, manifests = siim
    train = read_manifest(manifests[0])
    stem = train.loc[train["label"] == 1, "image"].iloc[0].rsplit("/", 1)[-1][:-4]
    lungs = tmp_path / "lungs"
    lungs.mkdir()
    Image.fromarray(np.full((50, 50), 255, np.uint8)).save(lungs / f"{stem}.png")  # image is 64x64
    with pytest.raises(DgxError, match="50x50 but image .* is 64x64"):
        build_cache(manifests, root, 32, tmp_path / "cache", rle=rle, lung_dir=lungs)
    # A right-sized lung mask is used for the periphery instead of the template.
    lung = np.zeros((64, 64), np.uint8)
    lung[2:40, 2:30] = 255
    Image.fromarray(lung).save(lungs / f"{stem}.png")
    path = build_cache(manifests, root, 32, tmp_path / "cache", rle=rle, lung_dir=lungs)
    i = int(np.flatnonzero(train["image"].str.contains(stem))[0])
    per = load_cache(path)["periphery"][i].astype(bool)
    abn = load_cache(path)["abnormality"][i].astype(bool)
    assert not per[25:, :].any() or (per[25:, :] <= abn[25:, :]).all()  # band stays inside the given lung
    assert per[1:20, 1:15].any()


def test_cli_cache(siim, tmp_path):
    import typer
    from typer.testing import CliRunner

    from dgx.cli.data_cache import cache

    root, rle, manifests = siim
    app = typer.Typer()
    app.command()(cache)
    res = CliRunner().invoke(app, ["--root", str(root), "--manifests", str(manifests[0]), "--size", "16",
                                   "--out", str(tmp_path / "c"), "--rle", str(rle)])
    assert res.exit_code == 0, res.output
    assert load_cache(res.stdout.strip().splitlines()[-1])["images"].shape == (4, 16, 16)
    help_text = CliRunner().invoke(app, ["--help"]).output
    for flag in ("--root", "--manifests", "--size", "--out", "--skip-bad", "--lung-dir"):
        assert flag in help_text


def test_lesion_helper_is_inside_image():
    assert lesion(64, 3).any() and not lesion(64, 3)[40:].any()


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    """Issue B point 12 through the real CLI: each bad input names the file and the problem."""
    from typer.testing import CliRunner

    from dgx.cli import app
    from tests.test_siim import write_siim_tree

    runner = CliRunner()

    def fails(*args, needle):
        result = runner.invoke(app, [str(a) for a in args])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr
        assert needle in lines[0], lines[0]
        assert "Traceback" not in result.output

    root = tmp_path / "siim"
    splits, rle = write_siim_tree(root, SMALL)
    out = tmp_path / "m"
    prep = ("data", "prepare", "siim", "--splits", splits, "--opt", f"rle={rle}", "--out", out)
    fails(*prep[:3], "--root", tmp_path / "absent", needle="absent")  # missing root
    bad_csv = tmp_path / "list.csv"
    bad_csv.write_text("split,image_id\ntrain,1\n")
    fails("data", "prepare", "siim", "--metadata-only", "--splits", bad_csv, needle="lacks column(s) dicom_path")
    fails("data", "prepare", "chexpert", "--splits", splits, needle="--splits is for the siim source only")
    rel = pd.read_csv(splits)["dicom_path"]
    (root / rel.iloc[0]).write_bytes(b"plain text named .dcm")  # a non-DICOM .dcm
    fails(*prep, "--root", root, needle=f"{rel.iloc[0]}")
    (root / rel.iloc[0]).unlink()  # a referenced image that is absent
    fails(*prep, "--root", root, needle=f"{rel.iloc[0]} not found")
    write_dicom(root / rel.iloc[0], np.full((64, 64), 100), uid=rel.iloc[0].rsplit("/", 1)[-1][:-4])
    result = runner.invoke(app, [str(a) for a in (*prep, "--root", root)])
    assert result.exit_code == 0, result.output
    # A positive whose PNG abnormality mask is 40 px while its image is 64 px: size mismatch at cache time.
    train_csv = out / "cxr-p.train.csv"
    manifest = pd.read_csv(train_csv, keep_default_na=False)
    good = train_csv.read_bytes()
    k = int(np.flatnonzero(manifest["label"] == 1)[0])
    manifest.loc[k, "abnormality"] = "masks/small.png"
    (root / "masks").mkdir()
    Image.fromarray(np.full((40, 40), 255, dtype=np.uint8)).save(root / "masks" / "small.png")
    manifest.to_csv(train_csv, index=False)
    fails("data", "cache", "--root", root, "--manifest-dir", out, "--rle", rle, "--size", 32,
          "--out", tmp_path / "cache", needle="small.png is 40x40 but image")
    assert not any((tmp_path / "cache").glob("*/index.json"))  # nothing half-written
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]
    train_csv.write_bytes(good)
    # The happy path through the CLI, with the --splits flag.
    result = runner.invoke(app, [str(a) for a in ("data", "cache", "--root", root, "--manifest-dir", out, "--rle",
                                                  rle, "--size", 32, "--out", tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "lungs: 4 template" in " ".join(result.stderr.split())
