"""GradMask (Simpson et al., 2019), in the form of Viviano et al.'s reference code.

    L = CE + λ · Σ_{batch, channels, pixels} |(1 − m) · ∂|z₁ − z₀| / ∂x|

where z are the logits. One batched ``autograd.grad(create_graph=True)`` call;
batch norms and convolutions take the faster double backward of methods/second_order.py.
"""

from __future__ import annotations

import torch
from torch import nn

from dgx.methods.base import Method
from dgx.methods.second_order import second_order


class GradMask(Method):
    name = "gradmask"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        with second_order():
            logits = model(x)
        contrast = (logits[:, 1].float() - logits[:, 0].float()).abs().sum()
        (grad,) = torch.autograd.grad(contrast, x, create_graph=True)
        penalty = ((1 - m) * grad.float()).abs().sum()
        return self.combine(self.ce(logits, y), penalty)
