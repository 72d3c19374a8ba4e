"""Cache mask sources beyond the RLE: lungs from torchxrayvision's PSPNet, and radiologist gaze masks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dgx.errors import DgxError
from dgx.masks import periphery_mask
from dgx.masks.gaze import gaze_heatmap, gaze_mask
from dgx.prep import lungseg
from dgx.prep.cache_builder import GAZE_SIGMA, build_cache, load_cache, lung_template, read_index
from dgx.prep.manifest import read_manifest
from tests.test_cache import siim  # noqa: F401  (fixture: 8 DICOMs, 4 positives, with manifests)


def _pspnet_checkpoint(path, on: str) -> None:
    """A real-architecture PSPNet checkpoint whose output is constant: channel ``on`` says yes everywhere.

    The final 1x1 classifier's weights are zero and its biases +10 for ``on``,
    -10 elsewhere, so the segmentation is known without trained weights. Saved
    the way torchxrayvision's release is (DataParallel "module." prefixes).
    """
    import torch
    from torchxrayvision.baseline_models.chestx_det import PSPNet
    from torchxrayvision.baseline_models.chestx_det.ptsemseg.pspnet import pspnet

    model = pspnet(len(PSPNet.targets))
    with torch.no_grad():
        model.classification.weight.zero_()
        model.classification.bias.fill_(-10.0)
        model.classification.bias[PSPNet.targets.index(on)] = 10.0
    torch.save({f"module.{k}": v.half() for k, v in model.state_dict().items()}, path)


def test_find_weights(tmp_path, monkeypatch):
    from dgx.config import get_settings

    monkeypatch.setenv("DGX_LUNG_MODEL", str(tmp_path / "absent.pth"))
    get_settings.cache_clear()  # settings are read once per process; this test changes them twice
    assert lungseg.find_weights("auto") is None and lungseg.find_weights(None) is None
    assert lungseg.find_weights("none") is None
    with pytest.raises(DgxError, match=r"absent\.pth not found.*--lung-model none"):
        lungseg.find_weights(tmp_path / "absent.pth")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setenv("DGX_LUNG_MODEL", str(weights))
    get_settings.cache_clear()
    assert lungseg.find_weights("auto") == weights


def test_bad_weights_file_is_one_line(tmp_path):
    bad = tmp_path / "pspnet.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DgxError, match=r"cannot load lung segmentation weights .*pspnet\.pth") as err:
        lungseg.LungSegmenter(bad, device="cpu")
    assert "\n" not in str(err.value)


def test_clean_lungs_keeps_two_largest():
    m = np.zeros((20, 20), dtype=bool)
    m[2:18, 1:8] = m[2:18, 11:19] = True  # two lungs
    m[0, 10] = True  # a speck
    want = m.copy()
    want[0, 10] = False
    assert np.array_equal(lungseg.clean_lungs(m), want)


def test_pspnet_lungs_drive_the_periphery(siim, tmp_path):  # noqa: F811
    """With local weights, positives' periphery masks come from the model's lung channels.

    Right Lung on everywhere -> the whole image is lung, so each periphery mask
    must equal periphery_mask(all ones) united with the abnormality. One CPU
    forward pass per batch of the PSPNet at 512 px takes ~5 s.
    """
    root, rle, manifests = siim
    weights = tmp_path / lungseg.WEIGHTS_FILE
    _pspnet_checkpoint(weights, on="Right Lung")
    path = build_cache(manifests, root, 32, tmp_path / "cache", rle=rle, lung_model=weights)
    arrays, index = load_cache(path), read_index(path)
    assert index["lungs"] == {"user": 0, "model": 4, "template": 0}
    assert index["mask_options"]["lung_model"] != ""
    labels = arrays["labels"]
    for i in np.flatnonzero(labels == 1):
        want = periphery_mask(np.ones((32, 32), bool), index["mask_options"]["periphery_width"],
                              arrays["abnormality"][i])
        assert np.array_equal(arrays["periphery"][i], want.astype(np.uint8))
    assert arrays["periphery"][labels == 0].all()
    # The same manifests without the model are a different cache, with the template's lungs.
    other = build_cache(manifests, root, 32, tmp_path / "cache", rle=rle)
    assert other != path and read_index(other)["lungs"]["template"] == 4


def test_failed_segmentation_falls_back_to_template(siim, tmp_path, monkeypatch, caplog):  # noqa: F811
    root, rle, manifests = siim
    calls = []

    class Fake:
        def __init__(self, weights, device=None, batch_size=8):
            pass

        def __call__(self, images):
            calls.append(len(images))
            lung = np.zeros(images.shape[1:], bool)
            lung[4:28, 4:28] = True
            return [lung if k % 2 == 0 else None for k in range(len(images))]

    monkeypatch.setattr(lungseg, "LungSegmenter", Fake)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    path = build_cache(manifests, root, 32, tmp_path / "cache", rle=rle, lung_model=weights)
    arrays, index = load_cache(path), read_index(path)
    assert calls == [4] and index["lungs"] == {"user": 0, "model": 2, "template": 2}
    assert "lung segmentation failed on 2 image(s)" in caplog.text
    pos = np.flatnonzero(arrays["labels"] == 1)
    square = np.zeros((32, 32), bool)
    square[4:28, 4:28] = True
    width = index["mask_options"]["periphery_width"]
    for k, i in enumerate(pos):
        lung = square if k % 2 == 0 else lung_template(32)
        assert np.array_equal(arrays["periphery"][i], periphery_mask(lung, width, arrays["abnormality"][i]))


def _gaze_csv(path, manifests, corner: dict[str, tuple[float, float]]) -> None:
    rows = []
    for image_id, (x, y) in corner.items():
        for f in range(5):
            rows.append((image_id, f"{image_id}.dcm", f, x + 0.01 * f, y, 10 + f))
    pd.DataFrame(rows, columns=["image_id", "dicom_path", "fixation", "x", "y", "t"]).to_csv(path, index=False)


def test_gaze_mask_kind(siim, tmp_path):  # noqa: F811
    """Positives with gaze get their thresholded heatmap; orientation is row = x, column = y."""
    root, rle, manifests = siim
    train = read_manifest(manifests[0])
    ids = [p.rsplit("/", 1)[-1].removesuffix(".dcm") for p in train["image"]]
    pos = [i for i, label in zip(ids, train["label"]) if label == 1]
    neg = [i for i, label in zip(ids, train["label"]) if label == 0]
    # First positive looks top-right (x=0.1: top row, y=0.8: right column); a negative has gaze too;
    # the second positive has none.
    gaze = tmp_path / "gaze.csv"
    _gaze_csv(gaze, manifests, {pos[0]: (0.1, 0.8), neg[0]: (0.8, 0.2)})
    path = build_cache(manifests, root, 32, tmp_path / "cache", rle=rle, gaze=gaze, gaze_quantile=0.9)
    arrays, index = load_cache(path), read_index(path)
    assert index["masks"] == ["abnormality", "scaled", "periphery", "abnormality_released", "gaze"]
    g = arrays["gaze"]
    first = ids.index(pos[0])
    m = g[first].astype(bool)
    assert 0.05 < m.mean() <= 0.1 + 1e-9  # above the 0.9 quantile
    rows, cols = np.nonzero(m)
    assert rows.mean() < 8 and cols.mean() > 22  # top-right: x -> row, y -> column
    fix = pd.read_csv(gaze).query("image_id == @pos[0]")
    want = gaze_mask(gaze_heatmap(fix, 32, GAZE_SIGMA * 32), 0.9)
    assert np.array_equal(m, want)
    assert g[ids.index(pos[1])].all() and g[ids.index(neg[0])].all()  # no gaze / negative: no constraint
    # Without --gaze, no gaze kind is cached.
    assert "gaze" not in load_cache(build_cache(manifests, root, 32, tmp_path / "cache", rle=rle))


def test_train_with_gaze_mask_and_clear_error_without(siim, tmp_path):  # noqa: F811
    from dgx.data.loader import batches
    from dgx.data.real import load_real
    from dgx.resolve import load_data
    from dgx.spec import TrainConfig
    from dgx.train import train

    root, rle, manifests = siim
    data = tmp_path / "data"
    (data / "manifests").mkdir(parents=True)
    for m in manifests:
        (data / "manifests" / m.name).write_bytes(m.read_bytes())
    train_ids = [p.rsplit("/", 1)[-1].removesuffix(".dcm") for p in read_manifest(manifests[0])["image"]]
    gaze = tmp_path / "gaze.csv"
    _gaze_csv(gaze, manifests, {i: (0.3, 0.3) for i in train_ids})
    build_cache(list((data / "manifests").glob("*.csv")), root, 32, data / "cache", rle=rle, gaze=gaze)
    bundle = load_real("cxr-p", {}, 32, data)
    assert "gaze" in bundle.train.masks
    cfg = TrainConfig(method="rrr", mask="gaze", dataset="cxr-p", model="resnet18", weights="none",
                      image_size=32, epochs=1, batch_size=4, lam=1.0)
    result = train(cfg, bundle, tmp_path / "run", device="cpu", progress=False)
    assert np.isfinite(result.history[0]["train_loss"]) and 0 <= result.val_auroc <= 1
    masks = np.concatenate([m.numpy() for _, _, m in batches(bundle.train, 4, "gaze")])[:, 0]
    pos = bundle.train.labels == 1
    assert not masks[pos].all(axis=(1, 2)).any() and masks[~pos].all()  # every train positive has gaze here
    # The synthetic benchmark has no gaze: the error lists the kinds it has.
    decoy = TrainConfig(method="rrr", mask="gaze", dataset="decoy-cxr", model="resnet18", weights="none",
                        image_size=32, epochs=1, data_options=(("n_train", "16"), ("n_val", "8"), ("n_test", "8"),
                                                               ("n_target", "8")))
    with pytest.raises(DgxError, match=r"unknown mask for dataset decoy-cxr 'gaze'.*periphery"):
        load_data(decoy)
