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
after the ReLU had clipped them, a bug the default does not reproduce.

The ``official`` profile (dgx/profiles.py) reproduces the released code instead:
``tensors="released"`` hooks the modules ``models/extract_activations.py``
hooked (every ``bn*``, with ``downsample.1`` replacing the block's last one)
and reads the stored tensors after the forward pass, in-place ReLU and residual
add included; ``shuffle="released"`` permutes background values across
channels too (``utils.py:create_masked_image``), with ``shuffle_seed`` the
periphery path's reseeding (the same permutation for an image in every epoch);
``per_sample`` takes the CE from a batched train-mode pass and every image and
its shuffled copy through a pass with per-sample batch-norm statistics.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from dgx.errors import DgxError, unknown_choice
from dgx.methods.base import Method, pack_size

if TYPE_CHECKING:  # functions import torch themselves, so reading a method's traits needs no torch
    import torch
    from torch import nn

LAYER_CHOICES = ("all", "last")


def activation_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The normalization layers whose outputs are pre-activations, in forward order."""
    from torch import nn  # torch on first use: a method's traits are read without it (the flag checks)
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
    return [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, norms) and "downsample" not in name.split(".")
    ]


def released_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules the released code hooked: names containing ``bn``, with ``downsample.1``
    replacing the hook registered just before it (the block's last batch norm)."""
    out: list[tuple[str, nn.Module]] = []
    for name, mod in model.named_modules():
        if "bn" in name or "downsample.1" in name:
            if "downsample.1" in name and out:
                out.pop()
            out.append((name, mod))
    return out


def shuffle_background(x: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly permute each image's pixels where m == 0; pixels where m == 1 stay put.

    x: (B, C, H, W); m: (B, 1, H, W) in {0, 1}. Fully batched: two argsorts give,
    per image, the background positions in index order and in a random order, and
    the in-mask positions identically in both, so they map to themselves.
    """
    import torch  # torch on first use: a method's traits are read without it (the flag checks)
    b, c, h, w = x.shape
    fg = m.reshape(b, h * w) > 0.5
    index = torch.arange(h * w, device=x.device, dtype=torch.float32).expand(b, -1) / (h * w)
    noise = torch.rand(b, h * w, device=x.device, generator=generator)
    ordered = torch.argsort(torch.where(fg, 2.0 + index, index), dim=1)
    shuffled = torch.argsort(torch.where(fg, 2.0 + index, noise), dim=1)
    source = torch.empty_like(ordered).scatter_(1, ordered, shuffled)
    flat = x.reshape(b, c, h * w)
    return flat.gather(2, source.unsqueeze(1).expand(-1, c, -1)).reshape(b, c, h, w)


def shuffle_released(x: torch.Tensor, m: torch.Tensor, generator: torch.Generator | None = None,
                     seed: int | None = None) -> torch.Tensor:
    """The released shuffle: each image's background values, all channels pooled, randomly permuted.

    ``seed`` (the released periphery path, which reseeded on every call): the
    permutation of an image's n background values depends only on (seed, n), so
    an image gets the same one in every epoch. Otherwise a fresh one per call.
    """
    import torch  # torch on first use: a method's traits are read without it (the flag checks)
    b, c, h, w = x.shape
    n = c * h * w
    bg = (m < 0.5).expand(b, c, h, w).reshape(b, n)
    index = torch.arange(n, device=x.device, dtype=torch.float32).expand(b, -1) / n
    if seed is None:
        noise = torch.rand(b, n, device=x.device, generator=generator)
    else:
        fixed = torch.rand(n, generator=torch.Generator().manual_seed(int(seed))).to(x.device)
        noise = fixed[(bg.cumsum(1) - 1).clamp_(min=0)]  # a background value's key: its rank among them
    ordered = torch.argsort(torch.where(bg, index, 2.0 + index), dim=1)
    shuffled = torch.argsort(torch.where(bg, noise, 2.0 + index), dim=1)
    source = torch.empty_like(ordered).scatter_(1, ordered, shuffled)
    return x.reshape(b, n).gather(1, source).reshape(b, c, h, w)


class _DistanceHooks:
    """Forward hooks that record ‖o(a) − o(b)‖₂ for the row pairs ``pairs(out)`` selects from each output.

    ``after``: keep each hooked output and measure it after the forward pass (the
    released code's reading, which sees later in-place ops); else measure it in the hook.
    """

    def __init__(self, layers: list[nn.Module], pairs, after: bool = False, models: int = 1) -> None:
        self.pairs, self.after, self.models = pairs, after, models
        self.outputs: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in layers]

    def _hook(self, module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        self.outputs.append(out if self.after else self._distance(out))

    def _distance(self, out: torch.Tensor) -> torch.Tensor:
        import torch  # torch on first use: a method's traits are read without it (the flag checks)
        a, b = self.pairs(out)
        if self.models > 1:  # a packed model: model k's activations are the k-th block of channels
            return torch.linalg.vector_norm((a - b).unflatten(1, (self.models, -1)).flatten(2).float(), dim=2)
        return torch.linalg.vector_norm((a - b).flatten(1).float(), dim=1)

    def distances(self) -> torch.Tensor:
        """(layers, pairs), or (layers, pairs, K) for a packed model of K."""
        import torch  # torch on first use: a method's traits are read without it (the flag checks)
        return torch.stack([self._distance(o) for o in self.outputs] if self.after else self.outputs)

    def __enter__(self) -> "_DistanceHooks":
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()


def masked_copies(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, x_masked): the rows of x whose mask has background, and their shuffled copies.

    Every other row's shuffled copy would be the row itself (nothing to permute).
    """
    # torch on first use: a method's traits are read without it (the flag checks)
    from dgx.methods.per_sample import constrained_rows

    rows = constrained_rows(m)[0]
    return rows, shuffle_background(x.index_select(0, rows), m.index_select(0, rows)).detach()


class ActDiff(Method):
    name = "actdiff"
    display_name = "ActDiff"

    @dataclasses.dataclass(frozen=True)
    class Options:
        # every hooked layer, or only the last (stored in configs as actdiff_layers)
        layers: str = dataclasses.field(default="all", metadata={"choices": LAYER_CHOICES})

    @classmethod
    def from_config(cls, cfg, profile, shuffle_seed=None) -> "ActDiff":
        return cls(cfg.lam, layers=cls.parse_options(cfg.method_options).layers, per_sample=profile.penalty_bn == "per_sample",
                   tensors=profile.actdiff_tensors, shuffle=profile.shuffle, shuffle_seed=shuffle_seed)

    def __init__(self, lam: float = 0.0, layers: Literal["all", "last"] = "all", *, per_sample: bool = False,
                 tensors: Literal["pre_activation", "released"] = "pre_activation",
                 shuffle: Literal["pixels", "released"] = "pixels", shuffle_seed: int | None = None) -> None:
        super().__init__(lam)
        if layers not in LAYER_CHOICES:
            raise unknown_choice("ActDiff layer set", layers, LAYER_CHOICES)
        self.layers, self.per_sample, self.tensors = layers, per_sample, tensors
        self.shuffle, self.shuffle_seed = shuffle, shuffle_seed

    def hooked(self, model: nn.Module) -> list[nn.Module]:
        found = released_layers(model) if self.tensors == "released" else activation_layers(model)
        if not found:
            raise DgxError(f"ActDiff found no layers to compare in {type(model).__name__} ({self.tensors} tensors); "
                           "use a model with batch norms named bn* (the ResNets)")
        layers = [mod for _, mod in found]
        return layers[-1:] if self.layers == "last" else layers

    def masked(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.shuffle == "released":
            return shuffle_released(x, m, seed=self.shuffle_seed).detach()
        return shuffle_background(x, m).detach()

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        import torch  # torch on first use: a method's traits are read without it (the flag checks)

        # torch on first use: a method's traits are read without it (the flag checks)
        from dgx.methods.per_sample import constrained_rows
        if self.per_sample:
            return self._loss_per_sample(model, x, y, m)
        b = x.shape[0]
        rows = constrained_rows(m)[0]
        x_masked = self.masked(x.index_select(0, rows), m.index_select(0, rows))
        p = len(rows)

        def pairs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # split: its backward concatenates the two parts' gradients (two slices would each
            # zero-fill a full-size buffer); index_select's backward scatters P rows into B.
            clean, masked = out.split([out.shape[0] - p, p])
            return clean.index_select(0, rows), masked

        k = pack_size(model)
        with _DistanceHooks(self.hooked(model), pairs, after=self.tensors == "released", models=k) as hooks:
            logits = model(torch.cat([x, x_masked]))
        # (layers, P[, K]): mean over layers, sum over the shuffled samples; the other B − P
        # samples' distances are exactly zero.
        penalty = hooks.distances().mean(0).sum(0) if k > 1 else hooks.distances().mean(0).sum()
        return self.combine(self.ce(logits[:b], y), penalty)

    def _loss_per_sample(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         m: torch.Tensor) -> dict[str, torch.Tensor]:
        """The released step: CE from a batched pass, then each image and its shuffled copy (x₀, x̃₀, x₁, x̃₁, …,
        the released order of running-statistics updates) with per-sample batch-norm statistics.

        One pass serves both: its first B rows are the batch in batch statistics (the CE), the rest the
        pairs in per-sample statistics. An image with an all-ones mask is its own shuffled copy (distance
        exactly zero): it takes one no-grad pass, whose statistics count for both of its updates.
        """
        import torch  # torch on first use: a method's traits are read without it (the flag checks)

        # torch on first use: a method's traits are read without it (the flag checks)
        from dgx.methods.per_sample import RunningLog, constrained_rows, per_sample_bn, statistics_pass
        b = x.shape[0]
        rows, rest = constrained_rows(m)
        log = RunningLog(2 * b)
        statistics_pass(model, x.index_select(0, rest), log, torch.stack([2 * rest, 2 * rest + 1], 1))
        xr = x.index_select(0, rows)
        pairs_in = torch.stack([xr, self.masked(xr, m.index_select(0, rows))], dim=1).flatten(0, 1)
        positions = torch.stack([2 * rows, 2 * rows + 1], 1).reshape(-1, 1)
        p = len(rows)

        def pairs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a, c = out.split([b, 2 * p])[1].unflatten(0, (p, 2)).unbind(1)
            return a, c

        with (_DistanceHooks(self.hooked(model), pairs, after=self.tensors == "released") as hooks,
              per_sample_bn(log, positions, batched_rows=b)):
            logits = model(torch.cat([x, pairs_in]))
        log.apply()
        penalty = hooks.distances().mean(0).sum() if p else logits.new_zeros((), dtype=torch.float32)
        return self.combine(self.ce(logits[:b], y), penalty)
