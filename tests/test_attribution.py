"""The attribution audit: region shares of input-gradient saliency, checked against a hand computation."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dgx.analyze.attribution import audit_model, mean_audits, regions, saliency
from dgx.data.base import Split, unconstrained
from tests.helpers import tiny_config, tiny_data


class LinearGap(nn.Module):
    """z₁ − z₀ = Σ W ⊙ x[:, 0] (channel 0 only): its input gradient is W, the same for every image."""

    def __init__(self, weights: np.ndarray) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.from_numpy(weights.astype(np.float32)))

    def forward(self, x):
        gap = (x[:, 0] * self.w).sum((1, 2))
        return torch.stack([torch.zeros_like(gap), gap], 1)


def test_saliency_is_the_logit_gap_gradient():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 16))
    sal = saliency(LinearGap(w), rng.integers(0, 255, (5, 16, 16), dtype=np.uint8), batch_size=2)
    assert sal.shape == (5, 16, 16)
    np.testing.assert_allclose(sal, np.broadcast_to(np.abs(w), sal.shape), rtol=1e-6)


def test_region_shares_match_a_hand_computation(tmp_path):
    data = tiny_data(tmp_path, tiny_config())
    split = data.test
    idx, masks = regions(split)
    assert len(idx) == len(split)  # decoy-cxr has anatomy for every image
    stacked = np.stack([masks[k] for k in ("abnormality", "periphery", "decoy", "elsewhere")])
    assert (stacked.sum(0) == 1).all()  # disjoint and covering
    pos = split.labels == 1
    assert masks["abnormality"][~pos].sum() == 0 and masks["abnormality"][pos].any(axis=(1, 2)).all()
    assert (masks["decoy"] == (split.anatomy["decoy"] > 0)).all()  # the box never meets the lungs

    w = np.zeros(split.images.shape[1:])
    w[:4, -4:] = 3.0  # weight on the top-right corner, where the decoy box lies ...
    w[16, :] = 1.0  # ... and on one row across the chest
    audit = audit_model(LinearGap(w), data)
    shares = audit.shares[data.source]
    mass = np.abs(w)[None] * np.ones((len(split), 1, 1))
    for region, m in masks.items():
        assert np.isclose(shares[region], mass[m].sum() / mass.sum(), rtol=1e-5), region
    assert np.isclose(sum(shares.values()), 1.0)
    assert audit.area[data.source]["decoy"] == masks["decoy"].mean()
    assert set(audit.shares) == {data.source, *data.targets}
    # Averaging two runs' audits averages their shares.
    both = mean_audits([audit, audit_model(LinearGap(np.ones_like(w)), data)])
    uniform = {k: m.mean() for k, m in masks.items()}
    for region in masks:
        assert np.isclose(both.shares[data.source][region], (shares[region] + uniform[region]) / 2, rtol=1e-5)


def test_real_data_uses_annotated_images_and_has_no_decoy_column(tmp_path):
    """Real data has masks only for annotated positives and no anatomy: no decoy ground truth, no decoy column."""
    s = tiny_data(tmp_path, tiny_config()).test
    real = Split(s.images, s.labels, {k: s.masks[k] for k in ("abnormality", "periphery")})
    idx, masks = regions(real)
    assert set(masks) == {"abnormality", "periphery", "elsewhere"}
    np.testing.assert_array_equal(idx, np.flatnonzero(~unconstrained(s.masks["abnormality"])))
    stacked = np.stack(list(masks.values()))
    assert (stacked.sum(0) == 1).all()
    assert (masks["periphery"] == ((s.masks["periphery"][idx] > 0) & (s.masks["abnormality"][idx] == 0))).all()
