"""The method contract.

A method is the math of one training objective and nothing else: given the
model, a normalized input batch ``x`` (B, 3, H, W), labels ``y`` (B,) and an
attribution mask ``m`` (B, 1, H, W) with 1 = "may attend here", it returns a
dict with the total ``loss`` and its named parts. The training loop owns the
optimizer, AMP, devices and ``backward()``.

A packed model (dgx/pack.py: K trainings as one wide network) returns logits
(B, classes, K); a method then returns every part as a (K,) vector, one value
per packed model, with the same arithmetic per model as alone, and input
gradients taken with respect to a per-model input copy (K, B, 3, H, W).

Masks follow the paper's reference code: images without an annotation
(negatives, unannotated positives) carry an all-ones mask, so every penalty is
exactly zero for them.

A method also owns its traits: its display name, whether it uses a mask (and so
λ), its epoch count in the paper, its own options (``--method-opt``), and how
it is built from a config and a profile (:meth:`Method.from_config`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from dgx.errors import DgxError

if TYPE_CHECKING:  # functions import torch themselves, so reading a method's traits needs no torch
    import torch
    from torch import nn


def pack_size(model: Any) -> int:
    """K for a packed model (dgx/pack.py), 1 for a plain one."""
    return int(getattr(model, "pack_size", 1))


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A method without options of its own."""


class Method:
    name: ClassVar[str] = ""  # the registry key, as written in configs, studies and trial records
    display_name: ClassVar[str] = ""  # as the report's tables print it
    # Whether λ and a mask mean anything for this method (ERM: no).
    uses_mask: ClassVar[bool] = True
    paper_epochs: ClassVar[int] = 100  # §4: the mask methods train 100 epochs (Viviano et al.)
    # The method's own options (``--method-opt KEY=VALUE``): a small frozen dataclass of strings; a field's
    # ``metadata["choices"]`` lists its values.
    Options: ClassVar[type] = NoOptions

    @classmethod
    def parse_options(cls, pairs) -> Any:
        """This method's :attr:`Options` from KEY=VALUE ``pairs`` (defaults for the rest); a one-line error
        for a key it does not have or a value not among a field's choices."""
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        for key, value in pairs:
            if key not in fields:
                fix = f"its options: {', '.join(fields)}" if fields else "it takes none; drop --method-opt"
                raise DgxError(f"--method-opt {key}={value}: method {cls.name} has no option {key!r} ({fix})")
            choices = fields[key].metadata.get("choices")
            if choices and value not in choices:
                raise DgxError(f"--method-opt {key}={value}: {cls.name}'s {key} must be one of "
                               f"{', '.join(choices)}; pass e.g. --method-opt {key}={choices[0]}")
        return cls.Options(**dict(pairs))

    @classmethod
    def from_config(cls, cfg: Any, profile: Any, shuffle_seed: int | None = None) -> "Method":
        """Build from a TrainConfig-like ``cfg`` (``lam`` and ``method_options``) and a Profile."""
        return cls(cfg.lam if cls.uses_mask else 0.0)

    def __init__(self, lam: float = 0.0) -> None:
        if not lam >= 0:  # also rejects NaN
            raise DgxError(f"λ must be a non-negative number, got {lam}; pass e.g. --lam 0.01")
        self.lam = float(lam)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy, computed in float32 even under autocast; per model for packed logits (B, 2, K)."""
        import torch.nn.functional as F  # torch on first use: a method's traits are read without it (the flag checks)
        if logits.dim() == 3:
            return F.cross_entropy(logits.float(), y[:, None].expand(-1, logits.shape[2]), reduction="none").mean(0)
        return F.cross_entropy(logits.float(), y)

    @staticmethod
    def total(t: torch.Tensor, packed: bool) -> torch.Tensor:
        """Σ of all of ``t``'s elements; per model (over all but the leading axis) when ``packed``."""
        return t.flatten(1).sum(1) if packed else t.sum()

    def combine(self, ce: torch.Tensor, penalty: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": ce + self.lam * penalty, "ce": ce, "penalty": penalty}
