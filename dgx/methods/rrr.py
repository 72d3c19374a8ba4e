"""Right for the Right Reasons (Ross et al., 2017), as used in the paper §4.

    L = CE + λ · Σ_{batch, channels, pixels} ((1 − m) · ∂/∂x Σ_k log p̂_k)²

The input gradient of the summed log-probabilities is taken for the whole batch
with one ``autograd.grad(create_graph=True)`` call: Σ over the batch of each
sample's Σ_k log p̂_k has, for sample i, exactly sample i's gradient (in eval-mode
batch norm; in train mode batch statistics couple the samples, as they do in any
batched training step). The reference implementation looped over images.
Batch norms and convolutions take the faster double backward of methods/second_order.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dgx.methods.base import Method
from dgx.methods.second_order import second_order


def input_gradient(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, ∂ Σ_{i,k} log p̂_ik / ∂x), differentiable w.r.t. the model's parameters."""
    x = x.detach().requires_grad_(True)
    with second_order():
        logits = model(x)
    log_probs = F.log_softmax(logits.float(), dim=1).sum()
    (grad,) = torch.autograd.grad(log_probs, x, create_graph=True)
    return logits, grad


class RRR(Method):
    name = "rrr"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, grad = input_gradient(model, x)
        penalty = ((1 - m) * grad.float()).pow(2).sum()
        return self.combine(self.ce(logits, y), penalty)
