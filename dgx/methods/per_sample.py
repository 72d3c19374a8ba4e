"""Per-sample batch-norm statistics in one batched pass: the released code's penalty passes, batched.

The paper's released code (``train.py:train_epoch``) computes each image's
attribution penalty with the image alone in a train-mode network, so every
batch norm normalizes it with its own (batch-of-1) statistics and updates the
running statistics once per image. Within ``per_sample_bn()`` a batched forward
pass computes exactly that, for every image at once:

* **Normalization.** A batch of one is normalized over its spatial positions
  per channel: that is instance normalization with the batch norm's affine
  parameters. Here the (N, C, H, W) input is viewed as one sample with N·C
  channels, normalized by ``F.batch_norm`` with γ and β repeated N times, and
  viewed back, which is how PyTorch's own ``instance_norm`` works. Because it
  is still ``F.batch_norm``, an enclosing ``second_order()`` context gives it
  the closed-form double backward (RRR and GradMask differentiate it twice).
* **Running statistics.** N successive updates r ← (1 − m)·r + m·sᵢ compose to
  r_N = (1 − m)ᴺ·r₀ + Σᵢ m(1 − m)ᴺ⁻¹⁻ⁱ·sᵢ, applied once in row order, with
  each sᵢ the sample's mean and unbiased variance, as a batch of one gives them.
  (``num_batches_tracked`` still counts one per pass: it is read only when a
  batch norm has ``momentum=None``, which no torchvision model uses.)

Enter it *inside* ``second_order()`` (the innermost mode handles a call first)::

    with second_order(), per_sample_bn():
        logits = model(x)

Tested against a per-image loop with the released semantics (loss, every
parameter gradient and the running statistics after a step), and measured
against that loop in ``bench/official_step.py``.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dgx.errors import DgxError

_SIGNATURE = inspect.signature(F.batch_norm)


class per_sample_bn(TorchFunctionMode):
    """Within this context, every train-mode ``F.batch_norm`` normalizes each sample with its own statistics."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = _SIGNATURE.bind(*args, **kwargs)
            bound.apply_defaults()
            p = bound.arguments
            if p["training"]:
                return _per_sample(p)
        return func(*args, **kwargs)


def _per_sample(p: dict) -> torch.Tensor:
    x, weight, bias = p["input"], p["weight"], p["bias"]
    n, c = x.shape[:2]
    if x[0, 0].numel() < 2:
        raise DgxError(f"per-sample batch norm (--profile official) needs at least 2 values per channel, and a "
                       f"batch norm here sees a {'x'.join(map(str, x.shape[2:]))} map; raise --image-size "
                       "(ResNets: 64 or more)")
    flat = x.reshape(1, n * c, *x.shape[2:])
    y = F.batch_norm(flat, None, None, None if weight is None else weight.repeat(n),
                     None if bias is None else bias.repeat(n), True, 0.0, p["eps"])
    if p["running_mean"] is not None:
        _update_running(x.detach(), p["running_mean"], p["running_var"], float(p["momentum"]))
    return y.view(x.shape)


@torch.no_grad()
def _update_running(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float) -> None:
    """The running statistics after one batch-of-1 update per sample, in row order."""
    n = x.shape[0]
    dims = list(range(2, x.dim()))
    xf = x.float()
    mean = xf.mean(dims)  # (N, C)
    var = xf.var(dims, correction=1)  # unbiased, as batch norm's running variance
    steps = torch.arange(n - 1, -1, -1, device=x.device, dtype=torch.float64)
    weights = (momentum * (1 - momentum) ** steps).to(torch.float32)[:, None]  # sample i: m (1 − m)^(n−1−i)
    keep = (1 - momentum) ** n
    # Through .data, as batch norm's own kernel updates them: an earlier train-mode pass's backward keeps
    # these buffers (unused in train mode) and would refuse a version bump.
    running_mean.data.copy_((running_mean.float() * keep + (weights * mean).sum(0)).to(running_mean.dtype))
    running_var.data.copy_((running_var.float() * keep + (weights * var).sum(0)).to(running_var.dtype))


__all__ = ["per_sample_bn"]
