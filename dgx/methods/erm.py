"""Empirical risk minimization: L = CE(f(x), y), the baseline of every table."""

from __future__ import annotations

import torch
from torch import nn

from dgx.methods.base import Method


class ERM(Method):
    name = "erm"
    uses_mask = False

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = self.ce(model(x), y)
        return {"loss": ce, "ce": ce}
