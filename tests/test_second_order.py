"""The faster double backward of batch norm and convolution (dgx.methods.second_order).

Checked three independent ways: finite differences (gradcheck, gradgradcheck),
PyTorch's own generic double backward on objectives that use the first
derivatives, and whole RRR/GradMask training steps with and without the rerouting.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

from dgx.methods import build_method
from dgx.methods.second_order import second_order
from dgx.models import build_model


def _inputs(shape=(4, 3, 5, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
    w = (torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_(True)
    return x, w, b


def _rerouted(x, w, b):
    with second_order():
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
    with second_order():
        ya = bn_a(x)
    yb = bn_b(x)
    assert type(ya.grad_fn).__name__ != type(yb.grad_fn).__name__  # it did take the other path
    assert torch.equal(ya, yb)
    assert torch.equal(bn_a.running_mean, bn_b.running_mean) and torch.equal(bn_a.running_var, bn_b.running_var)
    assert int(bn_a.num_batches_tracked) == int(bn_b.num_batches_tracked) == 1


def test_eval_mode_batch_norm_is_not_rerouted():
    bn = torch.nn.BatchNorm2d(3).eval()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with second_order():
        y = bn(x)
    assert type(y.grad_fn).__name__ == type(bn(x).grad_fn).__name__


@pytest.mark.parametrize("method", ["rrr", "gradmask"])
def test_train_mode_method_step_equals_the_native_double_backward(method, monkeypatch):
    """A whole train-mode step (batch statistics coupling the samples) with and without the rerouting."""
    import dgx.methods.second_order as second_order_module

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

    class Native(second_order):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    # differentiable_pass (RRR's and GradMask's) imports second_order when it runs: patch it at its home.
    monkeypatch.setattr(second_order_module, "second_order", Native)
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


# ---------------------------------------------------------------- convolution

CONV_CASES = [  # (input shape, weight shape, stride, padding, dilation, groups, bias)
    ((3, 4, 9, 9), (6, 4, 3, 3), 1, 1, 1, 1, False),
    ((2, 4, 9, 8), (6, 2, 3, 3), 2, 1, 1, 2, True),  # stride 2, odd sizes, grouped, with bias
    ((2, 3, 11, 11), (5, 3, 7, 7), 2, 3, 1, 1, False),  # a ResNet stem
    ((2, 2, 8, 8), (4, 2, 3, 3), 1, 2, 2, 1, True),  # dilated
]


def _conv_inputs(case, seed=0):
    shape, wshape, stride, padding, dilation, groups, bias = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(*wshape, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(wshape[0], generator=g, dtype=torch.float64).requires_grad_(True) if bias else None
    return x, w, b, {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_first_derivatives_match_finite_differences(case):
    x, w, b, kw = _conv_inputs(case)

    def rerouted(x, w, *b):
        with second_order():
            return F.conv2d(x, w, *b, **kw)

    assert gradcheck(rerouted, (x, w, *([b] if b is not None else [])))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_input_gradient_is_differentiable_in_its_output_gradient_and_weight(case):
    """The create_graph input gradient gx(gy, W), and its derivatives, by finite differences."""
    x, w, b, kw = _conv_inputs(case)
    gy = torch.randn_like(F.conv2d(x, w, b, **kw)).requires_grad_(True)

    def input_gradient(gy, w):
        with second_order():
            y = F.conv2d(x, w, b, **kw)
        return torch.autograd.grad(y, x, grad_outputs=gy, create_graph=True)[0]

    assert gradcheck(input_gradient, (gy, w))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_second_derivatives_equal_pytorchs_double_backward(case):
    """An input-gradient penalty through conv -> tanh, as in RRR: every gradient of the final backward."""
    x, w, b, kw = _conv_inputs(case, seed=1)
    params = (w,) if b is None else (w, b)

    def grads(mode):
        xx = x.detach().requires_grad_(True)
        with mode():
            y = F.conv2d(xx, w, b, **kw).tanh()
        (gx,) = torch.autograd.grad((y * y.detach().cos()).sum(), xx, create_graph=True)
        return torch.autograd.grad(y.sum() + gx.pow(2).sum(), params)

    for ours, theirs in zip(grads(second_order), grads(torch.enable_grad)):
        assert torch.allclose(ours, theirs, rtol=1e-11, atol=1e-12)
        assert ours.abs().max() > 1e-3


def test_conv_create_graph_backward_refuses_weight_gradients_loudly():
    """The contract: a create_graph backward gives input gradients only, and asking for more fails."""
    x, w, b, kw = _conv_inputs(CONV_CASES[0])
    with second_order():
        y = F.conv2d(x, w, b, **kw)
    assert type(y.grad_fn).__name__ != type(F.conv2d(x, w, b, **kw).grad_fn).__name__  # it did take our path
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(y.sum(), w, create_graph=True)
    (gw,) = torch.autograd.grad(y.sum(), w, retain_graph=True)  # a plain backward gives it
    assert torch.allclose(gw, torch.autograd.grad(F.conv2d(x, w, b, **kw).sum(), w)[0])


def test_conv_string_padding_is_left_to_pytorch():
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    w = torch.randn(3, 2, 3, 3)
    with second_order():
        y = F.conv2d(x, w, padding="same")
    assert type(y.grad_fn).__name__ == type(F.conv2d(x, w, padding="same").grad_fn).__name__


def test_conv_under_autocast_casts_like_autocast_and_keeps_parameter_dtypes():
    """bf16 autocast on CPU: the output dtype and value are autocast's, the penalty's gradients come back
    float32 for the float32 weight and close to the native path's."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)

    def run(mode):
        x = x0.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16), mode():
            y = F.conv2d(x, w, padding=1)
            (gx,) = torch.autograd.grad(y.float().tanh().sum(), x, create_graph=True)
            (gw,) = torch.autograd.grad(gx.float().pow(2).sum() + y.float().sum(), w)
        return y, gx, gw

    (y, gx, gw), (y_ref, gx_ref, gw_ref) = run(second_order), run(torch.enable_grad)
    assert y.dtype == y_ref.dtype == torch.bfloat16 and torch.equal(y, y_ref)
    assert gx.dtype == gx_ref.dtype and gw.dtype == torch.float32
    assert torch.allclose(gw, gw_ref, rtol=0.05, atol=0.02 * gw_ref.abs().max().item())
