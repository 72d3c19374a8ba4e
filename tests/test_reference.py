"""dgx's batched RRR and ActDiff against per-image implementations structured like the paper's code.

In eval mode batch norm uses running statistics, so samples do not interact
and the batched loss and its parameter gradients must equal the per-image ones.
"""

from __future__ import annotations

import pytest
import torch

from dgx.methods import build_method
from dgx.methods.actdiff import masked_copies
from dgx.methods.reference import actdiff_per_image, rrr_per_image
from dgx.models import build_model


def _setup(seed=0, b=4, size=32):
    torch.manual_seed(seed)
    model = build_model("resnet18", "none").double().eval()
    x = torch.randn(b, 3, size, size, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    m = (torch.rand(b, 1, size, size) > 0.6).double()
    m[0] = 1.0  # a negative's all-ones mask: zero penalty
    return model, x, y, m


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_rrr_batched_equals_per_image():
    model, x, y, m = _setup()
    batched = build_method("rrr", 0.5).loss(model, x, y, m)
    g_batched = _grads(model, batched["loss"])
    ref = rrr_per_image(model, x, y, m, 0.5)
    g_ref = _grads(model, ref["loss"])
    assert batched["penalty"].item() == pytest.approx(ref["penalty"].item(), rel=1e-5)  # the methods compute losses in float32
    assert batched["ce"].item() == pytest.approx(ref["ce"].item(), rel=1e-5)  # the methods compute losses in float32
    assert ref["penalty"].item() > 0
    for a, b in zip(g_batched, g_ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_actdiff_batched_equals_per_image():
    model, x, y, m = _setup(1)
    torch.manual_seed(5)
    batched = build_method("actdiff", 0.5).loss(model, x, y, m)
    g_batched = _grads(model, batched["loss"])
    torch.manual_seed(5)
    rows, shuffled = masked_copies(x, m)  # the very shuffle the batched call drew
    assert rows.tolist() == [1, 2, 3]  # row 0's all-ones mask gets no shuffled copy ...
    x_masked = x.clone()
    x_masked[rows] = shuffled  # ... because its copy would be x itself, as the per-image loop forwards it
    ref = actdiff_per_image(model, x, x_masked, y, 0.5)
    g_ref = _grads(model, ref["loss"])
    assert batched["penalty"].item() == pytest.approx(ref["penalty"].item(), rel=1e-5)  # the methods compute losses in float32
    assert ref["penalty"].item() > 0
    for a, b in zip(g_batched, g_ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
