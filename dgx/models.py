"""Backbone factory: any torchvision classifier with a 2-class head.

Images arrive as uint8 grayscale (B, 1, H, W). :func:`to_input` replicates them
to 3 channels and normalizes them: by default with the ImageNet statistics the
pretrained weights expect (``imagenet``), or, as the paper's released code did
(``utils.py:get_data_transforms``, the ``official`` profile), with one mean
0.48865 and std 0.24621 replicated to 3 channels (``cxr``). Input gradients, and
so the RRR/GradMask penalties, are taken with respect to that tensor.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from dgx.errors import DgxError, unknown_choice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CXR_MEAN, CXR_STD = (0.48865,) * 3, (0.24621,) * 3  # the released code's "cxr" statistics, one grey channel x 3
NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "cxr": (CXR_MEAN, CXR_STD)}
NUM_CLASSES = 2


def available_models() -> list[str]:
    """Names of torchvision's image classification models, then dgx's CPU-sized ResNets."""
    return [*torchvision.models.list_models(module=torchvision.models), *NARROW_RESNETS]


# CPU-sized ResNets: ResNet-18's layout (BasicBlock ×[2, 2, 2, 2], 7×7 stem, max-pool, global
# average pool) at a fraction of its width. At 48 px, resnet18-w16 trains an ERM step in ~1/5 of
# resnet18's time (bench/), which is what lets the default main job train enough epochs on 2 cores.
NARROW_RESNETS = {"resnet18-w16": 16, "resnet18-w32": 32}


def narrow_resnet(width: int, num_classes: int = NUM_CLASSES) -> nn.Module:
    """torchvision's ResNet-18 with stage widths (w, 2w, 4w, 8w) instead of (64, 128, 256, 512)."""
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)  # then rebuilt narrower, same module names
    model.inplanes = width
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.layer1 = model._make_layer(BasicBlock, width, 2)
    model.layer2 = model._make_layer(BasicBlock, 2 * width, 2, stride=2)
    model.layer3 = model._make_layer(BasicBlock, 4 * width, 2, stride=2)
    model.layer4 = model._make_layer(BasicBlock, 8 * width, 2, stride=2)
    model.fc = nn.Linear(8 * width, num_classes)
    for m in model.modules():  # torchvision's own init, for the rebuilt layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return model


def _affine(device: torch.device, normalization: str = "imagenet") -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) with normalized = shift + pixel × scale, per channel, shape (1, 3, 1, 1)."""
    if normalization not in NORMALIZATIONS:
        raise unknown_choice("normalization", normalization, NORMALIZATIONS)
    mean_values, std_values = NORMALIZATIONS[normalization]
    mean = torch.tensor(mean_values, device=device).view(1, 3, 1, 1)
    std = torch.tensor(std_values, device=device).view(1, 3, 1, 1)
    return -mean / std, 1.0 / (255.0 * std)


def to_input(images: torch.Tensor, out: torch.Tensor | None = None, normalization: str = "imagenet") -> torch.Tensor:
    """uint8 (B, 1, H, W) → normalized float (B, 3, H, W) on the same device.

    (x / 255 − mean) / std per channel (see :data:`NORMALIZATIONS`), as one fused multiply-add that
    broadcasts the grey channel to three. ``out`` (float, (B, 3, H, W)) is
    written in place when given: see :class:`InputNormalizer`.
    """
    shift, scale = _affine(images.device, normalization)
    kwargs = {} if out is None else {"out": out}
    return torch.addcmul(shift, images.float(), scale, **kwargs)


class InputNormalizer:
    """:func:`to_input` into reused buffers, for CPU training.

    A fresh 38 MB float batch (64 × 3 × 224²) costs more in page faults than in
    arithmetic on CPU, so the uint8 → float cast and the output go into buffers
    kept per shape, and each channel is one ``shift_c + scale_c · pixel`` with
    scalar coefficients, which vectorizes better than one broadcasting
    ``addcmul``. Measured on 2 cores with the bench's loader loop, same run:
    ~7.3k img/s fresh tensors + addcmul, ~10k reused buffers + addcmul, ~12–15k
    this. Two output slots, alternated: a batch stays valid while the next one
    is made, which is all a training step needs. On CUDA the caching allocator
    makes this unnecessary, so it just calls :func:`to_input`.
    """

    def __init__(self, normalization: str = "imagenet") -> None:
        self._slots: dict[tuple, tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self._turn = 0
        self.normalization = normalization
        shift, scale = _affine(torch.device("cpu"), normalization)
        self._coefficients = [(shift.flatten()[c].clone(), float(scale.flatten()[c])) for c in range(3)]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.device.type != "cpu":
            return to_input(images, normalization=self.normalization)
        b, _, h, w = images.shape
        key = (b, h, w)
        if key not in self._slots:
            self._slots[key] = (torch.empty(b, 1, h, w), [torch.empty(b, 3, h, w), torch.empty(b, 3, h, w)])
        grey, outs = self._slots[key]
        self._turn ^= 1
        out = outs[self._turn]
        grey.copy_(images)
        for c, (shift, scale) in enumerate(self._coefficients):
            torch.add(shift, grey, alpha=scale, out=out[:, c : c + 1])
        return out


def _check_model(name: str) -> None:
    if name not in available_models():
        raise unknown_choice("model", name, ["resnet50", "resnet18", *NARROW_RESNETS, "densenet121",
                                             "... (any torchvision classifier)"])


# `--weights imagenet` means the weights torchvision's `pretrained=True` gave, which is what the
# paper used: IMAGENET1K_V1. torchvision's DEFAULT is V2 for ResNet-50 (other training recipe).
IMAGENET_TAG = "IMAGENET1K_V1"


def resolve_weights(name: str, weights: str) -> str:
    """The weights a config names, made exact: ``imagenet`` -> ``imagenet:IMAGENET1K_V1`` (the paper's;
    a model without V1 gets its torchvision DEFAULT), ``imagenet:TAG`` checked; others unchanged.

    The exact name is what a run's config, and so its run id and its trial, record.
    """
    if weights != "imagenet" and not weights.startswith("imagenet:"):
        return weights
    _check_model(name)
    if name in NARROW_RESNETS:
        raise DgxError(f"{name} is a dgx model with no ImageNet weights; pass --weights none or a PATH")
    enum = torchvision.models.get_model_weights(name)
    tags = [w.name for w in enum]
    if weights == "imagenet":
        return f"imagenet:{IMAGENET_TAG if IMAGENET_TAG in tags else enum.DEFAULT.name}"
    tag = weights.split(":", 1)[1]
    if tag not in tags:
        raise DgxError(f"--weights {weights}: {name} has no weights {tag!r}; choose from: "
                       f"{', '.join('imagenet:' + t for t in tags)}")
    return weights


def build_model(name: str = "resnet50", weights: str = "imagenet") -> nn.Module:
    """A torchvision classifier with a 2-class head.

    ``weights``: ``imagenet`` (IMAGENET1K_V1, the paper's; from torchvision's
    normal cache), ``imagenet:TAG`` (e.g. ``imagenet:IMAGENET1K_V2``), ``none``
    (random init) or a path to a state dict (a torchvision model's, or a dgx
    checkpoint's ``model`` entry). Head weights whose shape does not match the
    2-class head are left at their random init.
    """
    _check_model(name)
    weights = resolve_weights(name, weights)
    if name in NARROW_RESNETS:
        model = narrow_resnet(NARROW_RESNETS[name])
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES)
    if weights == "none":
        return model
    imagenet = weights.startswith("imagenet:")
    state = _imagenet_state(name, weights.split(":", 1)[1]) if imagenet else _file_state(Path(weights))
    _load_matching(model, state, source=weights)
    return model


def _imagenet_state(name: str, tag: str) -> dict[str, torch.Tensor]:
    spec = torchvision.models.get_model_weights(name)[tag]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    # A machine without internet must not hang here: bound the download attempt.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        return spec.get_state_dict(progress=False)
    except Exception as exc:  # noqa: BLE001 - any download failure means the same fix
        raise DgxError(
            f"ImageNet weights {tag} for {name} are not cached at {cached} and could not be downloaded "
            f"({type(exc).__name__}); copy {Path(spec.url).name} from {spec.url} to {cached.parent}/, "
            "or pass --weights PATH to a state dict, or --weights none"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _file_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DgxError(f"weights file {path} does not exist; pass --weights imagenet, --weights none or a path to a state dict")
    try:  # weights_only=True, always: a checkpoint from elsewhere must never run code when loaded
        with warnings.catch_warnings():  # torch's pickle-protocol notes: the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        # Not torch's message: for a pickle it advises weights_only=False, which would run the file's code.
        raise DgxError(f"weights file {path} is not a PyTorch state dict that loads safely ({type(exc).__name__}); "
                       "pass a file written by torch.save(model.state_dict(), PATH), or --weights imagenet or "
                       "--weights none") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a dgx checkpoint
    if not isinstance(state, dict):
        raise DgxError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


def check_input_size(model: nn.Module, name: str, size: int) -> None:
    """One forward pass of a blank ``size`` px image: a model that cannot take that size (a ViT built
    for 224 px, a network whose feature map would vanish) fails here, before any data is built."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    except Exception as exc:  # noqa: BLE001 - any failure of a blank input means the same fix
        fixed = getattr(model, "image_size", None)  # torchvision's ViTs take exactly one size
        hint = f"--image-size {fixed}" if isinstance(fixed, int) else "a larger --image-size"
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DgxError(f"--model {name} cannot take {size} px images ({why}); pass {hint}, or another --model "
                       "(e.g. resnet18)") from None
    finally:
        model.train(was_training)


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len(own) // 2:
        raise DgxError(
            f"weights {source!r} match only {len(usable)} of {len(own)} tensors of this model; "
            "check that --model names the architecture the weights were trained for"
        )
    model.load_state_dict(usable, strict=False)
