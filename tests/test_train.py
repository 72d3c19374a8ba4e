"""The training loop: learning, determinism, resume, model selection, divergence."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dgx.data import load_dataset
from dgx.spec import TrainConfig
from dgx.train import NonFiniteLossError, train
from tests.helpers import tiny_config, tiny_data


def test_erm_learns_decoy_cxr(tmp_path):
    """A short ERM training on the default decoy-cxr benchmark reaches val AUROC > 0.8."""
    cfg = TrainConfig(method="erm", mask="none", image_size=48, model="resnet18", weights="none",
                      lr=1e-3, epochs=4, data_options=(("n_train", "256"), ("n_val", "128")))
    data = load_dataset("decoy-cxr", dict(cfg.data_options), 48, tmp_path / "data")
    result = train(cfg, data, tmp_path / "run", progress=False)
    assert result.val_auroc > 0.8, result.history
    assert set(result.auroc) == {data.source, *data.targets}


def test_fixed_seed_gives_identical_metrics_on_cpu(tmp_path):
    cfg = tiny_config(method="rrr", mask="periphery", lam=0.1)
    data = tiny_data(tmp_path, cfg)
    a = train(cfg, data, tmp_path / "a", progress=False)
    b = train(cfg, data, tmp_path / "b", progress=False)
    assert a.auroc == b.auroc and a.history == b.history
    c = train(dataclasses.replace(cfg, seed=1), data, tmp_path / "c", progress=False)
    assert c.history != a.history


def test_interrupted_run_resumes_to_identical_result(tmp_path):
    cfg = tiny_config(method="actdiff", mask="periphery", lam=0.01, epochs=3)
    data = tiny_data(tmp_path, cfg)
    full = train(cfg, data, tmp_path / "full", progress=False)

    def interrupt(epoch, stats):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, data, tmp_path / "cut", progress=False, on_epoch=interrupt)
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = train(cfg, data, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 2
    assert resumed.auroc == full.auroc
    assert resumed.history == full.history


def test_finished_run_returns_stored_result(tmp_path):
    cfg = tiny_config(epochs=1)
    data = tiny_data(tmp_path, cfg)
    first = train(cfg, data, tmp_path / "r", progress=False)
    stored = json.loads((tmp_path / "r" / "result.json").read_text())
    assert stored["auroc"] == first.auroc
    again = train(cfg, data, tmp_path / "r", progress=False)
    assert again.auroc == first.auroc and again.wall_s == first.wall_s


def test_checkpoint_selected_on_source_validation_only(tmp_path):
    cfg = tiny_config(epochs=3)
    data = tiny_data(tmp_path, cfg)
    result = train(cfg, data, tmp_path / "r", progress=False)
    vals = [h["val_auroc"] for h in result.history]
    assert result.best_epoch == int(np.argmax(vals)) + 1
    assert result.val_auroc == max(vals)
    # Flipping every target's labels must not change which checkpoint is chosen.
    for split in data.targets.values():
        split.labels[:] = 1 - split.labels
    flipped = train(cfg, data, tmp_path / "r2", progress=False)
    assert flipped.best_epoch == result.best_epoch
    for name in data.targets:
        assert flipped.auroc[name] == pytest.approx(1 - result.auroc[name], abs=1e-9)


def test_non_finite_loss_stops_the_run(tmp_path, monkeypatch):
    cfg = tiny_config(epochs=2)
    data = tiny_data(tmp_path, cfg)
    import dgx.methods.erm as erm

    original = erm.ERM.loss

    def nan_loss(self, model, x, y, m):
        parts = original(self, model, x, y, m)
        return {**parts, "loss": parts["loss"] * torch.tensor(float("nan"))}

    monkeypatch.setattr(erm.ERM, "loss", nan_loss)
    with pytest.raises(NonFiniteLossError, match="non-finite training loss"):
        train(cfg, data, tmp_path / "r", progress=False)


def test_input_normalization_and_reused_buffers():
    from dgx.models import IMAGENET_MEAN, IMAGENET_STD, InputNormalizer, to_input

    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    by_hand = (images.float().expand(-1, 3, -1, -1) / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(to_input(images), by_hand, atol=1e-6)
    norm = InputNormalizer()
    a = norm(images)
    b = norm(images.flip(0))
    assert a.data_ptr() != b.data_ptr()  # two slots: the previous batch is intact while the next is made
    assert torch.allclose(a, by_hand, atol=1e-6) and torch.allclose(b, by_hand.flip(0), atol=1e-6)
    assert norm(images).data_ptr() == a.data_ptr()  # and then reused, no new allocation
