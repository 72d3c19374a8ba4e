"""ActDiff (Viviano et al., 2019), as used in the paper §4.

    x_masked = x · m + shuffle(x) · (1 − m)
    L = CE(f(x), y) + λ · Σ_batch  mean_l ‖o_l(x) − o_l(x_masked)‖₂

``shuffle`` permutes each image's background pixels independently (all
channels move together), destroying spatial information outside the mask and
leaving the pixels inside it untouched. o_l are the pre-activation outputs of
the encoder's normalization layers (for ResNet-50 the 49 batch norms that feed
a ReLU; the 4 shortcut ("downsample") norms are not pre-activations). The L2
norm is over each sample's whole activation tensor.

Both copies go through the network in one batched forward pass. Each distance
is computed inside the forward hook, before the following in-place ReLU
overwrites the tensor: the reference code stored the tensors and read them
after the ReLU had clipped them, a bug we do not reproduce.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dgx.errors import unknown_choice
from dgx.methods.base import Method

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
LAYER_CHOICES = ("all", "last")


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The normalization layers whose outputs are pre-activations, in forward order."""
    return [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, NORM_TYPES) and "downsample" not in name.split(".")
    ]


def shuffle_background(x: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly permute each image's pixels where m == 0; pixels where m == 1 stay put.

    x: (B, C, H, W); m: (B, 1, H, W) in {0, 1}. Fully batched: two argsorts give,
    per image, the background positions in index order and in a random order, and
    the in-mask positions identically in both, so they map to themselves.
    """
    b, c, h, w = x.shape
    fg = m.reshape(b, h * w) > 0.5
    index = torch.arange(h * w, device=x.device, dtype=torch.float32).expand(b, -1) / (h * w)
    noise = torch.rand(b, h * w, device=x.device, generator=generator)
    ordered = torch.argsort(torch.where(fg, 2.0 + index, index), dim=1)
    shuffled = torch.argsort(torch.where(fg, 2.0 + index, noise), dim=1)
    source = torch.empty_like(ordered).scatter_(1, ordered, shuffled)
    flat = x.reshape(b, c, h * w)
    return flat.gather(2, source.unsqueeze(1).expand(-1, c, -1)).reshape(b, c, h, w)


class _DistanceHooks:
    """Forward hooks that record ‖o(x) − o(x_masked)‖₂ per sample on a 2B batch."""

    def __init__(self, layers: list[nn.Module], batch: int) -> None:
        self.batch = batch
        self.distances: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers]

    def _hook(self, module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        # unbind, not two slices: its backward stacks the two halves' gradients into one
        # tensor, where each slice's backward would zero-fill a full-size buffer first.
        clean, masked = out.unflatten(0, (2, self.batch)).unbind(0)
        diff = (clean - masked).flatten(1).float()
        self.distances.append(torch.linalg.vector_norm(diff, dim=1))

    def __enter__(self) -> "_DistanceHooks":
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()


class ActDiff(Method):
    name = "actdiff"

    def __init__(self, lam: float = 0.0, layers: Literal["all", "last"] = "all") -> None:
        super().__init__(lam)
        if layers not in LAYER_CHOICES:
            raise unknown_choice("ActDiff layer set", layers, LAYER_CHOICES)
        self.layers = layers

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        x_masked = shuffle_background(x, m).detach()
        layers = [mod for _, mod in activation_layers(model)]
        if self.layers == "last":
            layers = layers[-1:]
        with _DistanceHooks(layers, b) as hooks:
            logits = model(torch.cat([x, x_masked]))
        penalty = torch.stack(hooks.distances).mean(0).sum()
        return self.combine(self.ce(logits[:b], y), penalty)
