"""The closed-form double backward of train-mode batch norm (dgx.methods.batchnorm).

Checked three independent ways: finite differences (gradgradcheck), PyTorch's
own generic double backward on an objective that uses every first derivative,
and a whole RRR/GradMask training step with and without the rerouting.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from dgx.methods import build_method
from dgx.methods.batchnorm import double_backward_batchnorm
from dgx.models import build_model


def _inputs(shape=(4, 3, 5, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
    w = (torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_(True)
    return x, w, b


def _rerouted(x, w, b):
    with double_backward_batchnorm():
        return F.batch_norm(x, None, None, w, b, training=True)


def _native(x, w, b):
    return F.batch_norm(x, None, None, w, b, training=True)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (6, 2, 7), (3, 4, 2, 3, 2)])
def test_first_and_second_derivatives_match_finite_differences(shape):
    x, w, b = _inputs(shape)
    assert gradcheck(_rerouted, (x, w, b))
    assert gradgradcheck(_rerouted, (x, w, b))


def _second_order(fn, x, w, b):
    """Gradients of an objective built from every first derivative (dx, dγ, dβ) of fn."""
    x = x.detach().requires_grad_(True)
    y = fn(x, w, b)
    weights = torch.arange(y.numel(), dtype=y.dtype).view_as(y).sin()
    s = (y.tanh() * weights).sum()
    gx, gw, gb = torch.autograd.grad(s, (x, w, b), create_graph=True)
    objective = gx.pow(2).sum() + gw.pow(3).sum() + (gb * gw).sum()
    return torch.autograd.grad(objective, (x, w, b))


def test_second_derivatives_equal_pytorchs_double_backward():
    x, w, b = _inputs((5, 4, 6, 6), seed=3)
    for ours, theirs in zip(_second_order(_rerouted, x, w, b), _second_order(_native, x, w, b)):
        assert torch.allclose(ours, theirs, rtol=1e-11, atol=1e-12)
        assert ours.abs().max() > 1e-3  # a live, non-trivial gradient


def test_forward_output_and_running_statistics_are_unchanged():
    torch.manual_seed(0)
    bn_a, bn_b = torch.nn.BatchNorm2d(3).double(), torch.nn.BatchNorm2d(3).double()
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    with double_backward_batchnorm():
        ya = bn_a(x)
    yb = bn_b(x)
    assert type(ya.grad_fn).__name__ != type(yb.grad_fn).__name__  # it did take the other path
    assert torch.equal(ya, yb)
    assert torch.equal(bn_a.running_mean, bn_b.running_mean) and torch.equal(bn_a.running_var, bn_b.running_var)
    assert int(bn_a.num_batches_tracked) == int(bn_b.num_batches_tracked) == 1


def test_eval_mode_batch_norm_is_not_rerouted():
    bn = torch.nn.BatchNorm2d(3).eval()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with double_backward_batchnorm():
        y = bn(x)
    assert type(y.grad_fn).__name__ == type(bn(x).grad_fn).__name__


@pytest.mark.parametrize("method", ["rrr", "gradmask"])
def test_train_mode_method_step_equals_the_native_double_backward(method, monkeypatch):
    """A whole train-mode step (batch statistics coupling the samples) with and without the rerouting."""
    import dgx.methods.gradmask as gradmask_module
    import dgx.methods.rrr as rrr_module

    torch.manual_seed(0)
    model = build_model("resnet18", "none").double().train()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    m = (torch.rand(4, 1, 32, 32) > 0.6).double()

    def grads():
        state = {k: v.clone() for k, v in model.state_dict().items()}
        model.zero_grad()
        parts = build_method(method, 0.5).loss(model, x, y, m)
        parts["loss"].backward()
        model.load_state_dict(state)  # undo the running-statistics update
        return parts["penalty"].item(), [p.grad.clone() for p in model.parameters()]

    penalty, ours = grads()

    class Native(double_backward_batchnorm):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(rrr_module, "double_backward_batchnorm", Native)
    monkeypatch.setattr(gradmask_module, "double_backward_batchnorm", Native)
    native_penalty, native = grads()
    assert penalty == pytest.approx(native_penalty, rel=1e-10) and penalty > 0
    for a, b in zip(ours, native):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)


def test_reduced_precision_input_keeps_its_dtype():
    """bf16 activations with float32 parameters, as under autocast: gradients come back in each input's dtype."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6).bfloat16().requires_grad_(True)
    w = torch.rand(3).add(0.5).requires_grad_(True)
    b = torch.randn(3).requires_grad_(True)
    y = _rerouted(x, w, b)
    (gx,) = torch.autograd.grad((y.float().tanh()).sum(), x, create_graph=True)
    gx.float().pow(2).sum().backward()
    assert gx.dtype == x.dtype and x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32
    x32 = x.detach().float().requires_grad_(True)
    (g32,) = torch.autograd.grad(_native(x32, w, b).tanh().sum(), x32, create_graph=True)
    w32 = w.grad.clone()
    w.grad = None
    g32.pow(2).sum().backward()
    assert torch.allclose(w32, w.grad, rtol=0.05, atol=0.05 * w.grad.abs().max().item())
