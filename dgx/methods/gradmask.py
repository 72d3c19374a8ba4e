"""GradMask (Simpson et al., 2019), in the form of Viviano et al.'s reference code.

    L = CE + λ · Σ_{batch, channels, pixels} |(1 − m) · ∂|z₁ − z₀| / ∂x|

where z are the logits. One batched ``autograd.grad(create_graph=True)`` call;
batch norms and convolutions take the faster double backward of methods/second_order.py.
``per_sample`` (the ``official`` profile) takes the cross-entropy from a batched
train-mode pass and the penalty from one with per-sample batch-norm statistics,
as the released code's per-image loop did for its penalties.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dgx.methods.base import Method
from dgx.methods.rrr import differentiable_pass, released_penalty

if TYPE_CHECKING:  # functions import torch themselves, so reading a method's traits needs no torch
    import torch
    from torch import nn


def gradmask_penalty(x: torch.Tensor, logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    import torch  # torch on first use: a method's traits are read without it (the flag checks)
    contrast = (logits[:, 1].float() - logits[:, 0].float()).abs().sum()
    (grad,) = torch.autograd.grad(contrast, x, create_graph=True)
    return Method.total(((1 - m) * grad.float()).abs(), packed=grad.dim() == 5)


class GradMask(Method):
    name = "gradmask"
    display_name = "GradMask"

    @classmethod
    def from_config(cls, cfg, profile, shuffle_seed=None) -> "GradMask":
        return cls(cfg.lam, per_sample=profile.penalty_bn == "per_sample")

    def __init__(self, lam: float = 0.0, *, per_sample: bool = False) -> None:
        super().__init__(lam)
        self.per_sample = per_sample

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.per_sample:  # the released step: a batched CE pass first, then the per-image penalties
            ce = self.ce(model(x), y)
            return self.combine(ce, released_penalty(model, x, m, gradmask_penalty))
        x, logits = differentiable_pass(model, x)
        return self.combine(self.ce(logits, y), gradmask_penalty(x, logits, m))
