"""Faster second derivatives for the input-gradient methods (RRR, GradMask).

RRR and GradMask differentiate an input gradient, so every training step runs a
double backward through the whole network. Within ``second_order()`` two kinds
of layer take a faster route than PyTorch's generic double backward; forward
values and first derivatives still come from PyTorch's own kernels.

Use::

    x = x.detach().requires_grad_(True)
    with second_order():
        logits = model(x)
    (grad,) = torch.autograd.grad(f(logits), x, create_graph=True)   # input gradients only
    (loss(logits) + penalty(grad)).backward()                        # every gradient, as usual

**Contract.** The ``create_graph`` backward through a rerouted convolution
computes its *input* gradient only, which is all an input-gradient penalty
needs; asking that backward for a convolution weight's gradient fails loudly
(PyTorch's "appears to not have been used in the graph"). A backward without
``create_graph``, such as the final ``loss.backward()``, gives every gradient.

Convolution (``torch.conv2d`` with numeric padding)
---------------------------------------------------
The input gradient gx = Wᵀ ⋆ gy is linear in gy and in W. Its backward, given
the upstream gradient u of gx, is ∂/∂gy = conv(u, W), a forward convolution, and
∂/∂W = the weight gradient of a convolution with input u and output gradient gy.
PyTorch's generic ``ConvolutionBackwardBackward0`` computes the weight part as a
convolution of transposed (batch ↔ channel) tensors, with copies for the
transposes; here it is the native weight-gradient kernel. In an RRR step
(resnet50, 64 px, batch 16, 2 CPU threads) the step went from 555 to 436 ms.

Train-mode batch norm (affine ``F.batch_norm``)
-----------------------------------------------
PyTorch's generic double backward of batch norm (``NativeBatchNormBackwardBackward0``)
assembles its answer from dozens of full-size elementwise ops: in an RRR step
(same setting) it took 237 ms, seven times the 32 ms of batch norm's own backward
in the same pass, and running the same step with eval-mode batch norm (whose
second derivative is trivial) was 18% faster. Here the first backward is itself
an autograd Function whose backward is the closed form below: one native
batch-norm backward, one reduction and three fused multiply-adds per layer.

Per channel, with means over the n elements of (N, H, W):
    x̂ = (x − μ)·r,  r = (σ² + ε)^−½
    first backward:  dx = γ r (g − ḡ − a x̂),  dγ = n a,  dβ = n ḡ,  a = mean(g x̂)
Given the upstream gradients (u, v_γ, v_β) of (dx, dγ, dβ), and
b = mean(u x̂), s = mean(u g) − ū ḡ:
    ∂/∂g = γ r (u − ū − b x̂) + v_γ x̂ + v_β
    ∂/∂γ = n r (s − a b)
    ∂/∂x = γ r² [(3ab − s) x̂ − b (g − ḡ) − a (u − ū)] + v_γ r (g − ḡ − a x̂)
(μ and r depend on x; the ∂/∂x line is their total derivative.)

Both are tested by finite differences (gradcheck, gradgradcheck), against
PyTorch's double backward, and on whole RRR and GradMask steps
(tests/test_second_order.py).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

_SIGNATURE = inspect.signature(F.batch_norm)


def _channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A (C,) vector shaped to broadcast over an (N, C, ...) tensor."""
    return t.view(1, -1, *([1] * (ndim - 2)))


class _BatchNormTrain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        y, mean, rstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = _BatchNormTrainBackward.apply(g, x, weight, mean, rstd, ctx.eps)
        need = ctx.needs_input_grad
        return (dx if need[0] else None, dw if need[1] else None, db if need[2] else None, None, None, None, None)


class _BatchNormTrainBackward(torch.autograd.Function):
    """(g, x, γ) -> (dx, dγ, dβ) of train-mode batch norm, with the closed-form backward above."""

    @staticmethod
    def forward(ctx, g, x, weight, mean, rstd, eps):
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, mean, rstd, True, eps, [True, True, True])
        ctx.save_for_backward(g, x, weight, mean, rstd, dw, db)
        ctx.eps = eps
        ctx.set_materialize_grads(False)
        return dx, dw, db

    @staticmethod
    @once_differentiable
    def backward(ctx, u, v_w, v_b):
        g, x, weight, mean, rstd, dw, db = ctx.saved_tensors
        nd, dims = x.dim(), [d for d in range(x.dim()) if d != 1]
        n = x.numel() // x.shape[1]
        acc = rstd.dtype  # float32 for half inputs, else the input's own precision
        r, gamma = rstd, weight.to(acc)
        a, g_bar = dw.to(acc) / n, db.to(acc) / n
        coef_x = torch.zeros_like(r)   # of x̂
        coef_g = torch.zeros_like(r)
        coef_u = torch.zeros_like(r)
        const = torch.zeros_like(r)
        grad_g = grad_w = None
        if u is not None:
            du, sum_ux, sum_u = torch.ops.aten.native_batch_norm_backward(
                u, x, weight, None, None, mean, rstd, True, ctx.eps, [True, True, True])
            b, u_bar = sum_ux.to(acc) / n, sum_u.to(acc) / n
            s = (u * g).sum(dims, dtype=acc) / n - u_bar * g_bar
            k = gamma * r * r
            coef_x = k * (3 * a * b - s)
            coef_g = -k * b
            coef_u = -k * a
            const = k * (b * g_bar + a * u_bar)
            grad_g = du
            grad_w = n * r * (s - a * b)
        if v_w is not None:
            v_w = v_w.to(acc)
            coef_x = coef_x - v_w * r * a
            coef_g = coef_g + v_w * r
            const = const - v_w * r * g_bar
        # x̂ = (x − μ) r: fold its offset into the constant.
        scale_x = coef_x * r
        grad_x = torch.addcmul(_channel(const - scale_x * mean, nd), _channel(scale_x, nd), x)
        grad_x.addcmul_(_channel(coef_g, nd), g)
        if u is not None:
            grad_x.addcmul_(_channel(coef_u, nd), u)
        if v_w is not None or v_b is not None:
            extra = torch.zeros_like(grad_x) if grad_g is None else grad_g.to(acc)
            if v_w is not None:
                extra = torch.addcmul(extra + _channel(-v_w * r * mean, nd), _channel(v_w * r, nd), x)
            if v_b is not None:
                extra = extra + _channel(v_b.to(acc), nd)
            grad_g = extra
        return (None if grad_g is None else grad_g.to(g.dtype), grad_x.to(x.dtype),
                None if grad_w is None else grad_w.to(weight.dtype), None, None, None)


class _ConvInputGrad(torch.autograd.Function):
    """(gy, W) -> gx, the input gradient of a convolution of ``x``, with a native-kernel backward.
    Computed in gy's dtype (bf16 under autocast); gradients return in each input's own dtype."""

    @staticmethod
    def forward(ctx, gy, weight, x, stride, padding, dilation, groups):
        ctx.save_for_backward(gy, weight)  # x only gives the kernel its shape and layout
        ctx.conf = (stride, padding, dilation, groups)
        return torch.ops.aten.convolution_backward(gy, x.to(gy.dtype), weight.to(gy.dtype), None, stride, padding,
                                                   dilation, False, [0, 0], groups, [True, False, False])[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, u):
        gy, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need, w = ctx.needs_input_grad, weight.to(gy.dtype)
        u = u.to(gy.dtype)
        d_gy = torch.conv2d(u, w, None, stride, padding, dilation, groups) if need[0] else None
        d_w = torch.ops.aten.convolution_backward(gy, u, w, None, stride, padding, dilation, False, [0, 0],
                                                  groups, [False, True, False])[1] if need[1] else None
        return d_gy, d_w, None, None, None, None, None


class _Conv2d(torch.autograd.Function):
    """``torch.conv2d`` whose create_graph backward is :class:`_ConvInputGrad` (input gradient only)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        ctx.save_for_backward(x, weight)  # the inputs themselves, so a create_graph backward reaches them
        ctx.conf, ctx.dtype, ctx.has_bias = (stride, padding, dilation, groups), dtype, bias is not None
        with torch.autocast(device, enabled=False):  # cast as autocast would
            return torch.conv2d(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                                stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        need, gy = ctx.needs_input_grad, gy.to(ctx.dtype)
        if torch.is_grad_enabled():  # a create_graph backward: the input gradient only (module contract)
            gx = _ConvInputGrad.apply(gy, weight, x, *ctx.conf) if need[0] else None
            return gx, None, None, None, None, None, None
        stride, padding, dilation, groups = ctx.conf
        gx, gw, gb = torch.ops.aten.convolution_backward(
            gy, x.to(ctx.dtype), weight.to(ctx.dtype), [weight.shape[0]] if ctx.has_bias else None, stride, padding,
            dilation, False, [0, 0], groups, [need[0], need[1], need[2] and ctx.has_bias])
        return gx, gw, gb, None, None, None, None


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _pair(v) -> list[int]:
    return [int(i) for i in v] if isinstance(v, (tuple, list)) else [int(v), int(v)]


def batch_norm_arguments(args: tuple, kwargs: dict) -> dict:
    """A call of ``F.batch_norm``'s arguments by name, defaults filled in."""
    bound = _SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


class second_order(TorchFunctionMode):
    """Within this context, train-mode affine batch norms and 2-D convolutions take the faster double backward."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            p = batch_norm_arguments(args, kwargs)
            if p["training"] and p["weight"] is not None and p["bias"] is not None:
                return _BatchNormTrain.apply(p["input"], p["weight"], p["bias"], p["running_mean"],
                                             p["running_var"], p["momentum"], p["eps"])
        elif func is torch.conv2d:
            p = _CONV_DEFAULTS | dict(zip(_CONV_ARGS, args)) | kwargs
            if not isinstance(p["padding"], str) and p["input"].dim() == 4:
                return _Conv2d.apply(p["input"], p["weight"], p["bias"], _pair(p["stride"]), _pair(p["padding"]),
                                     _pair(p["dilation"]), int(p["groups"]))
        return func(*args, **kwargs)


__all__ = ["second_order"]
