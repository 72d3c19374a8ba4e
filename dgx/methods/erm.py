"""Empirical risk minimization: L = CE(f(x), y), the baseline of every table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dgx.methods.base import Method

if TYPE_CHECKING:  # functions import torch themselves, so reading a method's traits needs no torch
    import torch
    from torch import nn


class ERM(Method):
    name = "erm"
    display_name = "ERM"
    uses_mask = False
    paper_epochs = 15  # §4: as Saab et al.

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = self.ce(model(x), y)
        return {"loss": ce, "ce": ce}
