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

from dgx.methods.actdiff import activation_layers, released_layers


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


def released_step_loss(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor, lam: float,
                       x_masked: torch.Tensor | None = None) -> torch.Tensor:
    """One training step's loss exactly as the released ``train.py:train_epoch`` computed it, one image at a time.

    A batched train-mode pass for the mean cross-entropy, then each image alone
    through the train-mode network (batch-of-1 batch-norm statistics, one
    running-statistics update per pass) for its penalty: RRR with
    ``log(softmax + 1e-11)``, GradMask, or ActDiff over the tensors the released
    hooks stored (``bn*``, ``downsample.1`` replacing the block's last one, read
    after the forward pass) for the image and then its ``x_masked`` copy. The
    ``official`` profile's batched step must equal it (tests/test_official.py);
    ``bench/official_step.py`` measures both.
    """
    ce = F.cross_entropy(model(x).float(), y)
    total = x.new_zeros((), dtype=torch.float32)
    layers = [mod for _, mod in released_layers(model)]
    for i in range(x.shape[0]):
        if kind == "actdiff":
            pair: list[list[torch.Tensor]] = []
            for image in (x[i : i + 1], x_masked[i : i + 1]):
                acts: list[torch.Tensor] = []
                handles = [layer.register_forward_hook(lambda mod, inp, out: acts.append(out)) for layer in layers]
                try:
                    model(image)
                finally:
                    for h in handles:
                        h.remove()
                pair.append(acts)
            total = total + torch.stack([torch.linalg.vector_norm((a - b).float()) for a, b in zip(*pair)]).mean()
            continue
        xi = x[i : i + 1].detach().requires_grad_(True)
        out = model(xi).float()
        if kind == "rrr":
            (g,) = torch.autograd.grad(torch.log(F.softmax(out, dim=1) + 1e-11).sum(), xi, create_graph=True)
            total = total + ((1 - m[i : i + 1]) * g.float()).pow(2).sum()
        else:  # gradmask
            (g,) = torch.autograd.grad((out[:, 1] - out[:, 0]).abs().sum(), xi, create_graph=True)
            total = total + ((1 - m[i : i + 1]) * g.float()).abs().sum()
    return ce + lam * total


__all__ = ["rrr_per_image", "actdiff_per_image", "released_step_loss"]
