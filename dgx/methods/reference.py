"""Per-image reference implementations of RRR and ActDiff, structured like the paper's public code.

The reference code computes the attribution penalty one image at a time: a
separate forward pass (two for ActDiff: the image and its shuffled copy) and
attribution loss per image of the batch, then sums. dgx batches both. These
functions exist to check dgx against that structure (equal gradients where
batch-norm statistics do not couple the samples, i.e. eval-mode BN) and to
measure the speedup in ``bench/``; training never uses them.

Both return the same dict as :meth:`dgx.methods.base.Method.loss`, with the same
scaling: mean cross-entropy over the batch plus λ × the penalty summed over it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgx.methods.actdiff import activation_layers


def rrr_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, lam: float) -> dict:
    b = x.shape[0]
    ce_total, penalty_total = x.new_zeros(()), x.new_zeros(())
    for i in range(b):
        xi = x[i : i + 1].detach().requires_grad_(True)
        logits = model(xi)
        (grad,) = torch.autograd.grad(F.log_softmax(logits.float(), dim=1).sum(), xi, create_graph=True)
        ce_total = ce_total + F.cross_entropy(logits.float(), y[i : i + 1])
        penalty_total = penalty_total + ((1 - m[i : i + 1]) * grad.float()).pow(2).sum()
    ce = ce_total / b
    return {"loss": ce + lam * penalty_total, "ce": ce, "penalty": penalty_total}


def actdiff_per_image(model: nn.Module, x: torch.Tensor, x_masked: torch.Tensor, y: torch.Tensor,
                      lam: float) -> dict:
    """``x_masked`` is given (the shuffled copies), so the comparison with the batched method is exact."""
    layers = [mod for _, mod in activation_layers(model)]
    b = x.shape[0]
    ce_total, penalty_total = x.new_zeros(()), x.new_zeros(())
    for i in range(b):
        acts: list[list[torch.Tensor]] = [[], []]
        which = [0]
        handles = [layer.register_forward_hook(lambda mod, inp, out: acts[which[0]].append(out.clone()))
                   for layer in layers]
        try:
            logits = model(x[i : i + 1])
            which[0] = 1
            model(x_masked[i : i + 1])
        finally:
            for h in handles:
                h.remove()
        dists = [torch.linalg.vector_norm((a - c).flatten().float()) for a, c in zip(*acts)]
        ce_total = ce_total + F.cross_entropy(logits.float(), y[i : i + 1])
        penalty_total = penalty_total + torch.stack(dists).mean()
    ce = ce_total / b
    return {"loss": ce + lam * penalty_total, "ce": ce, "penalty": penalty_total}


__all__ = ["rrr_per_image", "actdiff_per_image"]
