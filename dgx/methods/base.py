"""The method contract.

A method is the math of one training objective and nothing else: given the
model, a normalized input batch ``x`` (B, 3, H, W), labels ``y`` (B,) and an
attribution mask ``m`` (B, 1, H, W) with 1 = "may attend here", it returns a
dict with the total ``loss`` and its named parts. The training loop owns the
optimizer, AMP, devices and ``backward()``.

Masks follow the paper's reference code: images without an annotation
(negatives, unannotated positives) carry an all-ones mask, so every penalty is
exactly zero for them.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dgx.errors import DgxError


class Method:
    name: ClassVar[str] = ""
    # Whether λ and a mask mean anything for this method (ERM: no).
    uses_mask: ClassVar[bool] = True

    def __init__(self, lam: float = 0.0) -> None:
        if not lam >= 0:  # also rejects NaN
            raise DgxError(f"λ must be a non-negative number, got {lam}; pass e.g. --lam 0.01")
        self.lam = float(lam)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy, computed in float32 even under autocast."""
        return F.cross_entropy(logits.float(), y)

    def combine(self, ce: torch.Tensor, penalty: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": ce + self.lam * penalty, "ce": ce, "penalty": penalty}
