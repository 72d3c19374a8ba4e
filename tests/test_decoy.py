"""decoy-cxr: determinism, caching, balance, masks, decoy placement, lung atlas."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest

from dgx.data import decoy as decoy_mod
from dgx.data.base import Split
from dgx.data.decoy import PARTS, SOURCE, TARGETS, DecoyConfig, fingerprint, generate_decoy, load_decoy, render
from dgx.data.lungs import N_ATLAS_ENTRIES, atlas_zip_path, load_lung_atlas, split_sides
from dgx.errors import DgxError

TINY = DecoyConfig(image_size=32, n_train=40, n_val=20, n_test=20, n_target=30)


@pytest.fixture(scope="module")
def bundle():
    return generate_decoy(TINY)


@pytest.fixture(scope="module")
def rendered():
    # More images for the statistics; rendering one part is cheap. A partly confounded source
    # (the default is fully confounded) so both classes have images with and without the decoy.
    cfg = dataclasses.replace(TINY, n_train=200, n_target=200, decoy_strength=0.9)
    return cfg, render(cfg, "train"), render(cfg, "mimic-cxr-synth")


def _splits(b):
    return {"train": b.train, "val": b.val, "test": b.test, **b.targets}


def _assert_same(a: Split, b: Split) -> None:
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert a.masks.keys() == b.masks.keys()
    assert all(np.array_equal(a.masks[k], b.masks[k]) for k in a.masks)


def test_bundle_layout(bundle):
    assert bundle.name == "decoy-cxr" and bundle.source == SOURCE == "cxr-p-synth"
    assert list(bundle.targets) == list(TARGETS) and len(TARGETS) == 4
    assert bundle.fingerprint == fingerprint(TINY) and len(bundle.fingerprint) == 16
    assert bundle.image_size == 32
    sizes = {"train": 40, "val": 20, "test": 20, **{t: 30 for t in TARGETS}}
    for name, split in _splits(bundle).items():
        n = sizes[name]
        assert split.images.shape == (n, 32, 32) and split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64 and set(np.unique(split.labels)) == {0, 1}
        assert split.labels.sum() == round(0.3 * n)  # exact class balance
        assert set(split.masks) == {"abnormality", "scaled", "periphery"}
        for m in split.masks.values():
            assert m.dtype == np.uint8 and m.shape == split.images.shape and set(np.unique(m)) <= {0, 1}
        assert 20 < split.images.mean() < 200 and split.images.std() > 20  # not blank or saturated


def test_deterministic_and_seed_sensitive(bundle):
    again = generate_decoy(TINY)
    for name, split in _splits(bundle).items():
        _assert_same(split, _splits(again)[name])
    other = generate_decoy(dataclasses.replace(TINY, seed=1))
    assert not np.array_equal(other.train.images, bundle.train.images)
    assert not np.array_equal(other.targets[TARGETS[0]].labels, bundle.targets[TARGETS[0]].labels)


def test_parts_have_independent_streams(bundle):
    # Changing the target size must not reshuffle the source splits.
    more = dataclasses.replace(TINY, n_target=12)
    _assert_same(render(more, "train").split, bundle.train)
    _assert_same(render(more, "test").split, bundle.test)
    assert len(render(more, TARGETS[1]).split) == 12


def test_fingerprint_covers_every_field():
    base = DecoyConfig()
    seen = {fingerprint(base)}
    for f in dataclasses.fields(DecoyConfig):
        v = getattr(base, f.name)
        new = v + 1 if isinstance(v, int) else (v * 0.5 if f.name != "periphery_width" else v * 1.5)
        seen.add(fingerprint(dataclasses.replace(base, **{f.name: new})))
    assert len(seen) == len(dataclasses.fields(DecoyConfig)) + 1
    assert fingerprint(DecoyConfig()) == fingerprint(base)


def test_cache_written_once_and_reused(tmp_path, bundle, monkeypatch):
    first = load_decoy(TINY, tmp_path)
    files = list((tmp_path / "decoy-cxr").iterdir())
    assert [f.name for f in files] == [f"{fingerprint(TINY)}.npz"]
    mtime = files[0].stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("regenerated despite cache")

    monkeypatch.setattr(decoy_mod, "generate_decoy", boom)
    second = load_decoy(TINY, tmp_path)
    assert files[0].stat().st_mtime_ns == mtime
    assert not list(tmp_path.rglob("*.tmp"))
    assert second.fingerprint == first.fingerprint and list(second.targets) == list(TARGETS)
    for name, split in _splits(second).items():
        _assert_same(split, _splits(bundle)[name])


def test_corrupt_cache_is_regenerated(tmp_path):
    path = tmp_path / "decoy-cxr" / f"{fingerprint(TINY)}.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    assert len(load_decoy(TINY, tmp_path).train) == 40
    assert zipfile.is_zipfile(path)


def test_mask_semantics(bundle):
    for split in _splits(bundle).values():
        neg, pos = split.labels == 0, split.labels == 1
        for m in split.masks.values():
            assert m[neg].all()  # negatives: no constraint
        abn, scl, per = (split.masks[k][pos].astype(bool) for k in ("abnormality", "scaled", "periphery"))
        assert abn.any(axis=(1, 2)).all()
        assert not (abn & ~per).any() and not (abn & ~scl).any()
        assert (abn.sum((1, 2)) < 0.1 * 32 * 32).all()  # tight: a few % of the image
        assert (per.sum((1, 2)) > abn.sum((1, 2))).all() and (per.sum((1, 2)) < 0.4 * 32 * 32).all()
        assert (scl.sum((1, 2)) > abn.sum((1, 2))).all()
        cell = (np.arange(32) * 6) // 32  # 32 px in 6 cells: sizes 5 and 6
        for r in range(6):
            for c in range(6):
                block = scl[:, cell == r][:, :, cell == c]
                assert (block.min(axis=(1, 2)) == block.max(axis=(1, 2))).all()


def test_lesion_context_and_decoy_geometry(rendered):
    cfg, src, _ = rendered
    sp, pos = src.split, src.split.labels == 1
    abn = sp.masks["abnormality"][pos].astype(bool)
    per = sp.masks["periphery"][pos].astype(bool)
    lungs = src.lungs[pos]
    assert not (abn & ~lungs).any()  # the pocket is lung, at its edge
    assert not (src.context[pos] & ~per).any() and not (src.context[pos] & abn).any()
    assert src.context[pos].any(axis=(1, 2)).all() and not src.context[~pos].any()
    # The pocket sits on one side only.
    sides = np.array([[(a & s).any() for s in split_sides(lung)] for a, lung in zip(abn, lungs)])
    assert (sides.sum(1) == 1).all()
    # The decoy token: present exactly when flagged, never in or next to the lungs.
    tok = src.decoy_mask
    assert (tok.any(axis=(1, 2)) == src.decoy).all()
    assert not (tok & src.lungs).any() and not (tok[pos] & per).any()
    ys, xs = np.nonzero(tok.any(0))
    assert ys.max() < 0.2 * 32 and xs.min() > 0.75 * 32  # top-right corner
    bright = sp.images[tok].mean() - sp.images[src.decoy][:, :8, :8].mean()
    assert bright > 0.6 * 255 * cfg.decoy_contrast  # visible against the background (~0.1 x 255 at the default)
    # Anatomy: the decoy box holds the token where drawn and has the same size where not.
    box = sp.anatomy["decoy"].astype(bool)
    assert (tok <= box).all() and box.any(axis=(1, 2)).all()
    assert not (box & src.lungs).any()
    assert np.array_equal(sp.anatomy["lungs"].astype(bool), src.lungs)
    band = sp.anatomy["periphery"].astype(bool)
    assert (band <= src.lungs).all()
    assert np.array_equal(band[pos] | abn, per)  # a positive's periphery mask = band + abnormality


def test_decoy_correlation_counts(rendered):
    cfg, src, tgt = rendered
    n_pos = round(cfg.pos_frac * cfg.n_train)
    d, y = src.decoy, src.split.labels == 1
    assert d[y].sum() == round(cfg.decoy_strength * n_pos)  # 0.9 * 60 = 54
    assert d[~y].sum() == round((1 - cfg.decoy_strength) * (cfg.n_train - n_pos))  # 14 of 140
    d, y = tgt.decoy, tgt.split.labels == 1
    assert d[y].sum() == 30 and d[~y].sum() == 70  # 50% in each class: independent


def _aspect(lungs: np.ndarray) -> float:
    """Mean height / width of the lungs' bounding box."""
    rows, cols = lungs.any(2).sum(1), lungs.any(1).sum(1)
    return float((rows / cols).mean())


def test_domain_shifts_are_real():
    cfg = dataclasses.replace(TINY, n_target=60)
    src = render(cfg, "test")
    img = {p: render(cfg, p) for p in TARGETS}
    s_img = src.split.images.astype(float)
    # Hospital shifts change the tone curve: flatter contrast, darker lungs.
    assert img["chexpert-synth"].split.images.std() < 0.92 * s_img.std()  # ~0.86x
    mimic = img["mimic-cxr-synth"]
    assert mimic.split.images[mimic.lungs].mean() < s_img[src.lungs].mean() - 8  # ~40 vs ~56
    # Age shifts the anatomy: taller, narrower (hyperinflated) lungs; ~0.98 vs ~0.83.
    for p in ("chexpert-age-synth", "chestx-ray8-synth"):
        assert _aspect(img[p].lungs) > 1.1 * _aspect(src.lungs)
    assert _aspect(mimic.lungs) == pytest.approx(_aspect(src.lungs), rel=0.05)
    # shift_scale=0 leaves only the decoy decorrelation.
    flat = render(dataclasses.replace(cfg, shift_scale=0.0), "chexpert-age-synth")
    assert abs(flat.split.images.mean() - s_img.mean()) < 4
    assert flat.split.images.std() == pytest.approx(s_img.std(), rel=0.05)
    assert _aspect(flat.lungs) == pytest.approx(_aspect(src.lungs), rel=0.05)


@pytest.mark.parametrize("size", [24, 64, 128])
def test_other_image_sizes(size):
    cfg = dataclasses.replace(TINY, image_size=size, scaled_grid=4, n_train=6, n_target=6)
    r = render(cfg, "chexpert-age-synth")
    assert r.split.images.shape == (6, size, size)
    assert (r.split.masks["abnormality"][r.split.labels == 1].sum((1, 2)) > 0).all()
    assert 0.15 < r.lungs.mean() < 0.5


def test_bad_config_and_part():
    with pytest.raises(DgxError):
        DecoyConfig(pos_frac=1.5)
    with pytest.raises(DgxError):
        DecoyConfig(lesion_depth=0.3, periphery_width=0.2)
    with pytest.raises(DgxError):
        render(TINY, "nope")
    assert PARTS[:3] == ("train", "val", "test")


def test_lung_atlas():
    with zipfile.ZipFile(atlas_zip_path()) as z:
        assert sum(not n.endswith("/") for n in z.namelist()) == N_ATLAS_ENTRIES == 517
    atlas = load_lung_atlas(32)
    assert atlas.dtype == bool and atlas.shape == (435, 32, 32)  # 82 archive entries are blank
    assert atlas.any(axis=(1, 2)).all()
    fill = atlas.mean(axis=(1, 2))
    assert 0.4 < fill.mean() < 0.8 and fill.min() > 0.2  # cropped to the lungs
    assert load_lung_atlas(32) is atlas  # in-memory cache
    left, right = split_sides(atlas[0])
    assert left.any() and right.any() and not (left & right).any()


def test_lung_atlas_disk_cache_and_missing_zip(tmp_path, monkeypatch):
    a = load_lung_atlas(32, tmp_path)
    assert len(list(tmp_path.glob("lung-atlas-*.npz"))) == 1
    assert np.array_equal(a, load_lung_atlas(32))
    import torchxrayvision

    monkeypatch.setattr(torchxrayvision, "__file__", str(tmp_path / "x" / "__init__.py"))
    with pytest.raises(DgxError, match="lung mask archive"):
        atlas_zip_path()


@pytest.mark.parametrize("negatives", ["lungs", "periphery"])
def test_negative_masks_fill_unconstrained_images_from_anatomy(bundle, negatives):
    from dgx.data.loader import batches

    split = bundle.train
    neg, pos = split.labels == 0, split.labels == 1
    for kind in ("abnormality", "periphery"):
        filled = split.mask(kind, negatives)
        assert np.array_equal(filled[neg], split.anatomy[negatives][neg])  # negatives: that anatomy
        assert np.array_equal(filled[pos], split.masks[kind][pos])  # annotated positives: unchanged
        assert not filled[neg].all(axis=(1, 2)).any()  # so the penalty now reaches negatives
    assert split.mask("periphery") is split.masks["periphery"]  # "ones": the paper's masks, untouched
    # The loader hands the filled masks to training, in batch order.
    _, labels, masks = next(batches(split, len(split), "abnormality", negatives=negatives))
    assert np.array_equal(masks[:, 0].numpy(), split.mask("abnormality", negatives))
    with pytest.raises(KeyError):
        Split(split.images, split.labels, split.masks).mask("periphery", negatives)  # no anatomy: refuse
