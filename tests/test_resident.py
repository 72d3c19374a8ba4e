"""The training split held on the device (issue: data on the GPU) gives exactly the host loader's batches."""

from __future__ import annotations

import pytest
import torch

from dgx import runs
from dgx.data.loader import Resident, batches
from dgx.train import _Run, train
from tests.helpers import tiny_config, tiny_data


@pytest.mark.parametrize("mask,negatives", [("none", "ones"), ("periphery", "ones"), ("abnormality", "lungs")])
def test_resident_batches_equal_the_loaders(tmp_path, mask, negatives):
    cfg = tiny_config()
    split = tiny_data(tmp_path, cfg).train
    resident = Resident(split, mask, negatives, "cpu")
    assert Resident.nbytes(split, mask) >= split.images.nbytes
    for seed in (0, 7):
        got = list(resident.batches(16, shuffle=True, seed=seed, drop_last=True))
        want = list(batches(split, 16, mask, shuffle=True, seed=seed, drop_last=True, negatives=negatives))
        assert len(got) == len(want) == len(split) // 16
        for g, w in zip(got, want):
            for a, b in zip(g, w):
                assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_training_from_resident_data_equals_the_host_loader(tmp_path, monkeypatch):
    cfg = tiny_config(method="rrr", mask="periphery", lam=1.0, epochs=2)
    data = tiny_data(tmp_path, cfg)
    host = train(cfg, data, runs.run_dir(tmp_path / "a", "x"), progress=False)
    built = []

    def on_cpu(self, split):  # what a GPU run does, forced on the CPU
        if not built:
            built.append(Resident(split, self.cfg.mask, self.cfg.negative_masks, self.dev))
        return built[0]

    monkeypatch.setattr(_Run, "resident", on_cpu)
    device = train(cfg, data, runs.run_dir(tmp_path / "b", "x"), progress=False)
    assert built and device.auroc == host.auroc and device.history == host.history
