"""Packed trials: K trainings that differ only in learning rate and weight decay, as one wide network.

At the paper's batch size of 16 a large GPU is mostly idle. The Appendix A
grid is built of points that share everything (data, seed, batch order, mask,
λ) but the optimizer's learning rate and weight decay, so K of them can share
one batch stream. :func:`pack_models` lays K ResNets side by side as one
network whose every layer is K independent layers:

* each convolution becomes one grouped convolution with K times the channels
  (``groups`` × K), model k's filters in the k-th block of channels;
* each batch norm one batch norm over K × C channels: batch statistics are per
  channel, so each block keeps its own model's statistics, running ones too;
* the stem takes the shared image batch (B, 3, H, W) as one convolution into
  K × 64 channels, or, for input gradients, a per-model copy (K, B, 3, H, W) as
  a grouped one, so that each model's input gradient is its own;
* the classifier is a batched matrix product; logits come out as (B, 2, K).

Nothing mixes the blocks, so the gradient of Σ_k loss_k with respect to model
k's block is model k's own gradient, and the methods return one loss per model
(see dgx/methods/base.py). :class:`PackedAdam` is ``torch.optim.Adam`` (L2 weight
decay, as the paper's) with a learning rate and weight decay per model.

Why grouped layers and not ``torch.func.vmap`` over ``functional_call``: vmap
lowers a convolution with batched weights to the same grouped convolution,
but it cannot run the closed-form double backward of
dgx/methods/second_order.py (its autograd Functions are not vmappable), nor the
methods' forward hooks (ActDiff) on batched tensors; a wide network runs both
unchanged. :func:`dgx.train.train_runs` trains a pack and writes each
member's run folder exactly as a training alone would; each member's result
equals the alone result within float tolerance (tests/test_pack.py).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init
from torchvision.models import ResNet

from dgx.errors import DgxError
from dgx.spec import PACKED_FIELDS


def check_packable(cfgs: Sequence, profile) -> None:
    """A one-line DgxError unless ``cfgs`` can train as one pack."""
    keys = {c.pack_key() for c in cfgs}
    if len(keys) > 1:
        raise DgxError(f"packed trials must differ only in {' and '.join(PACKED_FIELDS)}; these differ in more "
                       "(method, mask, λ, seed, data or model): pack grid points of one λ and seed")
    check_model_packable(next(iter(cfgs)).model, profile)


def check_model_packable(model: str, profile) -> None:
    """A one-line DgxError unless trainings of ``model`` under ``profile`` can be packed."""
    if profile.penalty_bn == "per_sample":
        raise DgxError(f"profile {profile.name!r} computes penalties with per-sample batch norm, which packing "
                       "does not support; use --pack 1 (the default) or --profile paper")
    if not model.startswith(("resnet", "wide_resnet", "resnext")):
        raise DgxError(f"packed trials need torchvision ResNets (resnet18/50, resnet18-w16, ...), not {model!r}; "
                       "use --pack 1 for other models")


class _Stem(nn.Module):
    """K first convolutions: shared input (B, 3, H, W) as one convolution, per-model input (K, B, 3, H, W) grouped."""

    def __init__(self, convs: Sequence[nn.Conv2d]) -> None:
        super().__init__()
        c = convs[0]
        if c.groups != 1 or c.bias is not None:
            raise DgxError("packing needs a ResNet stem (one convolution without bias)")
        self.k, self.stride, self.padding, self.dilation = len(convs), c.stride, c.padding, c.dilation
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in convs]))
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # (K, B, C, H, W): model k sees block k of the channels
            k, b, c, h, w = x.shape
            x = x.transpose(0, 1).reshape(b, k * c, h, w)
            if x.is_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.k)
        return F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, 1)


class _Head(nn.Module):
    """K linear classifiers on (B, K·F) features: logits (B, classes, K)."""

    def __init__(self, fcs: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.k = len(fcs)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in fcs]))  # (K, out, in)
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in fcs]))  # (K, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        z = torch.baddbmm(self.bias.unsqueeze(1).to(x.dtype), x.reshape(b, self.k, -1).transpose(0, 1),
                          self.weight.transpose(1, 2).to(x.dtype))  # (K, B, out)
        return z.permute(1, 2, 0)


def _wide_conv(convs: Sequence[nn.Conv2d]) -> nn.Conv2d:
    c, k = convs[0], len(convs)
    # skip_init: no random initialization, so building a pack leaves the RNG where training alone has it.
    wide = skip_init(nn.Conv2d, k * c.in_channels, k * c.out_channels, c.kernel_size, c.stride, c.padding,
                     c.dilation, k * c.groups, bias=c.bias is not None, device=c.weight.device, dtype=c.weight.dtype)
    with torch.no_grad():
        wide.weight.copy_(torch.cat([m.weight for m in convs]))
        if c.bias is not None:
            wide.bias.copy_(torch.cat([m.bias for m in convs]))
    return wide


def _wide_norm(norms: Sequence[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    n, k = norms[0], len(norms)
    if not (n.affine and n.track_running_stats):
        raise DgxError("packing needs affine batch norms with running statistics (torchvision's ResNets)")
    wide = skip_init(nn.BatchNorm2d, k * n.num_features, n.eps, n.momentum, device=n.weight.device,
                     dtype=n.weight.dtype)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(wide, name).copy_(torch.cat([getattr(m, name) for m in norms]))
        wide.num_batches_tracked = n.num_batches_tracked.clone()
    return wide


def pack_models(models: Sequence[nn.Module]) -> nn.Module:
    """One network computing the K ``models`` side by side (torchvision ResNets of one architecture).

    Its forward takes (B, 3, H, W), or (K, B, 3, H, W) with each model's own input, and returns
    logits (B, classes, K); ``pack_size`` is K. The models are copied, not shared.
    """
    if not models or not all(isinstance(m, ResNet) for m in models):
        raise DgxError("packed trials need torchvision ResNets (resnet18/50, resnet18-w16, ...); use --pack 1 "
                       "for other models")
    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in models}
    if len(shapes) > 1:
        raise DgxError("packed models must share one architecture")
    wide = copy.deepcopy(models[0])
    modules = [dict(m.named_modules()) for m in models]
    for name, mod in list(wide.named_modules()):
        if not name:
            continue
        parts = [d[name] for d in modules]
        if name == "conv1":
            new = _Stem(parts)
        elif isinstance(mod, nn.Conv2d):
            new = _wide_conv(parts)
        elif isinstance(mod, nn.BatchNorm2d):
            new = _wide_norm(parts)
        elif isinstance(mod, nn.Linear):
            new = _Head(parts)
        elif len(list(mod.children())) == 0 and any(True for _ in mod.parameters(recurse=False)):
            raise DgxError(f"packing does not know layer {name} ({type(mod).__name__})")
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(wide.get_submodule(parent) if parent else wide, attr, new)
    wide.pack_size = len(models)
    return wide


def member_state(packed: nn.Module, k: int, template: nn.Module) -> dict[str, torch.Tensor]:
    """Model k's state dict, in ``template``'s keys and shapes, sliced out of ``packed`` (copies)."""
    out, wide = {}, packed.state_dict()
    for key, t in template.state_dict().items():
        out[key] = slice_member(wide[key], k, t.shape).clone()
    return out


def slice_member(wide: torch.Tensor, k: int, shape: torch.Size) -> torch.Tensor:
    """Model k's block of a packed tensor: the tensor itself (shared counters), row k of a stacked one
    (the head), or the k-th of K equal blocks along the first dimension (everything else)."""
    if wide.shape == shape:
        return wide
    if wide.dim() == len(shape) + 1:
        return wide[k]
    n = shape[0]
    return wide[k * n:(k + 1) * n]


def load_members(packed: nn.Module, templates: Sequence[nn.Module]) -> None:
    """Copy each member's block of ``packed`` into its own model ``templates[k]`` (in place)."""
    wide = packed.state_dict()
    with torch.no_grad():
        for k, model in enumerate(templates):
            for key, t in model.state_dict().items():
                t.copy_(slice_member(wide[key], k, t.shape))


class PackedAdam:
    """``torch.optim.Adam`` (L2 weight decay, no amsgrad) over a packed model, with a learning rate and a
    weight decay per member: ``lr`` and ``wd`` are (K,) tensors the caller may set between steps.

    Every parameter of a packed model holds K equal blocks along its first dimension, so its moments and
    update are viewed as (K, -1) rows and each row takes its member's rate. The arithmetic is the
    single-tensor Adam's, operation by operation.
    """

    def __init__(self, params: Sequence[nn.Parameter], k: int, lr: float = 1e-4, wd: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.k, self.betas, self.eps = list(params), k, betas, eps
        for p in self.params:
            if p.shape[0] % k:
                raise DgxError(f"a packed parameter of shape {tuple(p.shape)} is not made of {k} blocks")
        self.lr = torch.full((k,), float(lr), dtype=torch.float64)
        self.wd = torch.full((k,), float(wd), dtype=torch.float64)
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None if set_to_none else (p.grad.zero_() if p.grad is not None else None)

    def _rows(self, values: torch.Tensor, p: torch.Tensor, ndim: int) -> torch.Tensor:
        """(K,) values shaped to scale the K blocks of ``p`` viewed with ``ndim`` dimensions."""
        return values.to(device=p.device, dtype=p.dtype).view(self.k, *([1] * (ndim - 1)))

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        self.step_count += 1
        bias_correction1 = 1 - beta1 ** self.step_count
        bias_correction2_sqrt = (1 - beta2 ** self.step_count) ** 0.5
        neg_step = -(self.lr / bias_correction1)
        decay = bool((self.wd != 0).any())
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            blocks = (self.k, -1, *p.shape[1:]) if p.dim() > 1 else (self.k, -1)
            grad, param = p.grad.view(blocks), p.view(blocks)
            if decay:
                grad = grad.add(param * self._rows(self.wd, p, len(blocks)))
            m.view(blocks).lerp_(grad, 1 - beta1)
            v.view(blocks).mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.view(blocks).sqrt() / bias_correction2_sqrt).add_(self.eps)
            param.add_(torch.div(m.view(blocks), denom).mul_(self._rows(neg_step, p, len(blocks))))

    def load_members(self, states: Sequence[dict]) -> None:
        """Stack the members' ``torch.optim.Adam`` state dicts (one per member, same parameter order)."""
        steps = {int(s["state"][0]["step"]) if s["state"] else 0 for s in states}
        if len(steps) > 1:
            raise DgxError(f"packed members are at different optimizer steps ({sorted(steps)}); resume them apart")
        self.step_count = steps.pop()
        if not self.step_count:
            return
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq)):
            m.copy_(self._stack([s["state"][i]["exp_avg"] for s in states], m))
            v.copy_(self._stack([s["state"][i]["exp_avg_sq"] for s in states], v))

    def _stack(self, parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        return (torch.stack if like.dim() == parts[0].dim() + 1 else torch.cat)(parts).to(like.device)

    def member_state(self, k: int, template: torch.optim.Adam) -> dict:
        """Member k's state in ``torch.optim.Adam``'s own format, with ``template``'s param groups (its rates)."""
        sd = template.state_dict()
        params = [p for group in template.param_groups for p in group["params"]]
        state = {}
        if self.step_count:
            for i, (p, m, v) in enumerate(zip(params, self.exp_avg, self.exp_avg_sq)):
                state[i] = {"step": torch.tensor(float(self.step_count)),
                            "exp_avg": slice_member(m, k, p.shape).clone(),
                            "exp_avg_sq": slice_member(v, k, p.shape).clone()}
        return {"state": state, "param_groups": sd["param_groups"]}


__all__ = ["pack_models", "check_packable", "check_model_packable", "member_state", "load_members",
           "slice_member", "PackedAdam", "PACKED_FIELDS"]
