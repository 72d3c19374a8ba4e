"""Right for the Right Reasons (Ross et al., 2017), as used in the paper §4.

    L = CE + λ · Σ_{batch, channels, pixels} ((1 − m) · ∂/∂x Σ_k log p̂_k)²

The input gradient of the summed log-probabilities is taken for the whole batch
with one ``autograd.grad(create_graph=True)`` call: Σ over the batch of each
sample's Σ_k log p̂_k has, for sample i, exactly sample i's gradient (in eval-mode
batch norm; in train mode batch statistics couple the samples, as they do in any
batched training step). The reference implementation looped over images.
Batch norms and convolutions take the faster double backward of methods/second_order.py.

Two switches reproduce the released code (the ``official`` profile, see dgx/profiles.py):
``per_sample`` takes the cross-entropy from a batched train-mode pass and the
penalty from a pass with per-sample batch-norm statistics (methods/per_sample.py),
as the released per-image loop did; ``log_eps`` uses its ``log(softmax + 1e-11)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from dgx.methods.base import Method, pack_size

if TYPE_CHECKING:  # functions import torch themselves, so reading a method's traits needs no torch
    import torch
    from torch import nn

    from dgx.methods.per_sample import per_sample_bn

RELEASED_EPS = 1e-11  # the released code's log(softmax + 1e-11)


def differentiable_pass(model: nn.Module, x: torch.Tensor,
                        per_sample: per_sample_bn | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x as a leaf that requires grad, logits): a forward pass whose input gradient can be differentiated.

    ``per_sample``: a per-sample batch-norm mode (each sample's own statistics) to run the pass in.
    For a packed model of K, x is (K, B, 3, H, W): model k's copy in row k.
    """
    # torch on first use: a method's traits are read without it (the flag checks)
    from dgx.methods.second_order import second_order
    x = x.detach()
    if (k := pack_size(model)) > 1:  # one input copy per packed model, so each input gradient is its own
        x = x.expand(k, *x.shape)
    x = x.requires_grad_(True)
    with second_order(), (per_sample or contextlib.nullcontext()):  # per-sample innermost: it handles calls first
        logits = model(x)
    return x, logits


def released_penalty(model: nn.Module, x: torch.Tensor, m: torch.Tensor,
                     penalty: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Σ over images of ``penalty(x_i, logits_i, m_i)``, each image in batch-of-1 batch-norm statistics as the
    released per-image loop computed it, batched (methods/per_sample.py).

    Images with an all-ones mask have a penalty of exactly zero: they take a no-grad pass, only for their
    running-statistics updates, which land in the released (row) order with the others'.
    """
    import torch  # torch on first use: a method's traits are read without it (the flag checks)

    # torch on first use: a method's traits are read without it (the flag checks)
    from dgx.methods.per_sample import RunningLog, constrained_rows, per_sample_bn, statistics_pass
    rows, rest = constrained_rows(m)
    log = RunningLog(x.shape[0])
    statistics_pass(model, x.index_select(0, rest), log, rest[:, None])
    if len(rows):
        leaf, logits = differentiable_pass(model, x.index_select(0, rows), per_sample_bn(log, rows[:, None]))
        value = penalty(leaf, logits, m.index_select(0, rows))
    else:
        value = x.new_zeros((), dtype=torch.float32)
    log.apply()
    return value


def summed_log_probs(logits: torch.Tensor, log_eps: bool = False) -> torch.Tensor:
    """Σ_{i,k} log p̂_ik, exact (log-softmax) or as released (log of softmax + 1e-11)."""
    import torch  # torch on first use: a method's traits are read without it (the flag checks)
    import torch.nn.functional as F
    z = logits.float()
    return (torch.log(F.softmax(z, dim=1) + RELEASED_EPS) if log_eps else F.log_softmax(z, dim=1)).sum()


def input_gradient(model: nn.Module, x: torch.Tensor, *, log_eps: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, ∂ Σ_{i,k} log p̂_ik / ∂x), differentiable w.r.t. the model's parameters."""
    import torch  # torch on first use: a method's traits are read without it (the flag checks)
    x, logits = differentiable_pass(model, x)
    (grad,) = torch.autograd.grad(summed_log_probs(logits, log_eps), x, create_graph=True)
    return logits, grad


def rrr_penalty(x: torch.Tensor, logits: torch.Tensor, m: torch.Tensor, log_eps: bool = False) -> torch.Tensor:
    import torch  # torch on first use: a method's traits are read without it (the flag checks)
    (grad,) = torch.autograd.grad(summed_log_probs(logits, log_eps), x, create_graph=True)
    return Method.total(((1 - m) * grad.float()).pow(2), packed=grad.dim() == 5)


class RRR(Method):
    name = "rrr"
    display_name = "RRR"

    @classmethod
    def from_config(cls, cfg, profile, shuffle_seed=None) -> "RRR":
        return cls(cfg.lam, per_sample=profile.penalty_bn == "per_sample", log_eps=profile.rrr_log == "log_eps")

    def __init__(self, lam: float = 0.0, *, per_sample: bool = False, log_eps: bool = False) -> None:
        super().__init__(lam)
        self.per_sample, self.log_eps = per_sample, log_eps

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.per_sample:  # the released step: a batched CE pass first, then the per-image penalties
            ce = self.ce(model(x), y)
            return self.combine(ce, released_penalty(model, x, m, lambda a, z, k: rrr_penalty(a, z, k, self.log_eps)))
        x, logits = differentiable_pass(model, x)
        return self.combine(self.ce(logits, y), rrr_penalty(x, logits, m, self.log_eps))
