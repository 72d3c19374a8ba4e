"""ActDiff (Viviano et al., 2019), as used in the paper §4.

    x_masked = x · m + shuffle(x) · (1 − m)
    L = CE(f(x), y) + λ · Σ_batch  mean_l ‖o_l(x) − o_l(x_masked)‖₂

``shuffle`` permutes each image's background pixels independently (all
channels move together), destroying spatial information outside the mask and
leaving the pixels inside it untouched. o_l are the pre-activation outputs of
the encoder's normalization layers (for ResNet-50 the 49 batch norms that feed
a ReLU; the 4 shortcut ("downsample") norms are not pre-activations). The L2
norm is over each sample's whole activation tensor.

Only images whose mask leaves some background get a shuffled copy: where the
mask is all ones (negatives and unannotated positives, see methods/base.py)
x_masked is x itself, so the distance is exactly zero and a second forward pass
of that image would compute nothing but zeros. The clean batch and the P
shuffled copies go through the network in one batched forward pass of B + P
images (P ≈ 22% of B on CXR-P) instead of 2B. Per sample the loss and gradients
are those of the 2B pass (eval-mode batch norm, tested against the per-image
loop); in train mode the batch statistics are over the B + P distinct images
rather than 2B images of which B − P are duplicates. Each distance
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
    """Forward hooks that record ‖o(x) − o(x_masked)‖₂ per shuffled sample on a B + P batch.

    The first B rows are the clean batch; row B + j is the shuffled copy of clean row rows[j].
    """

    def __init__(self, layers: list[nn.Module], rows: torch.Tensor) -> None:
        self.rows = rows
        self.distances: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers]

    def _hook(self, module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        p = len(self.rows)
        # split: its backward concatenates the two parts' gradients (two slices would each
        # zero-fill a full-size buffer); index_select's backward scatters P rows into B.
        clean, masked = out.split([out.shape[0] - p, p])
        diff = (clean.index_select(0, self.rows) - masked).flatten(1).float()
        self.distances.append(torch.linalg.vector_norm(diff, dim=1))

    def __enter__(self) -> "_DistanceHooks":
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()


def masked_copies(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, x_masked): the rows of x whose mask has background, and their shuffled copies.

    Every other row's shuffled copy would be the row itself (nothing to permute).
    """
    rows = (m.flatten(1) < 0.5).any(1).nonzero().squeeze(1)
    return rows, shuffle_background(x.index_select(0, rows), m.index_select(0, rows)).detach()


class ActDiff(Method):
    name = "actdiff"

    def __init__(self, lam: float = 0.0, layers: Literal["all", "last"] = "all") -> None:
        super().__init__(lam)
        if layers not in LAYER_CHOICES:
            raise unknown_choice("ActDiff layer set", layers, LAYER_CHOICES)
        self.layers = layers

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        b = x.shape[0]
        rows, x_masked = masked_copies(x, m)
        layers = [mod for _, mod in activation_layers(model)]
        if self.layers == "last":
            layers = layers[-1:]
        with _DistanceHooks(layers, rows) as hooks:
            logits = model(torch.cat([x, x_masked]))
        # (layers, P): mean over layers, sum over the shuffled samples; the other B − P
        # samples' distances are exactly zero.
        penalty = torch.stack(hooks.distances).mean(0).sum()
        return self.combine(self.ce(logits[:b], y), penalty)
