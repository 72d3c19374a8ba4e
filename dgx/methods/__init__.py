"""Training objectives: ERM and the mask-based methods of the paper.

An explicit registry: add a method by adding a file and a line here.
"""

from __future__ import annotations

from dgx.errors import unknown_choice
from dgx.methods.actdiff import ActDiff
from dgx.methods.base import Method
from dgx.methods.erm import ERM
from dgx.methods.gradmask import GradMask
from dgx.methods.rrr import RRR
from dgx.profiles import PROFILES, Profile

METHODS: dict[str, type[Method]] = {
    "erm": ERM,
    "actdiff": ActDiff,
    "rrr": RRR,
    "gradmask": GradMask,
}


def build_method(name: str, lam: float = 0.0, actdiff_layers: str = "all", profile: Profile | None = None,
                 shuffle_seed: int | None = None) -> Method:
    """Instantiate a registered method with a profile's switches (default: ``paper``); unknown names
    list the valid ones. ``shuffle_seed``: ActDiff's fixed per-image shuffle (released periphery path)."""
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    p = profile or PROFILES["paper"]
    per_sample = p.penalty_bn == "per_sample"
    if name == "actdiff":
        return ActDiff(lam, layers=actdiff_layers, per_sample=per_sample,  # type: ignore[arg-type]
                       tensors=p.actdiff_tensors, shuffle=p.shuffle, shuffle_seed=shuffle_seed)
    if name == "rrr":
        return RRR(lam, per_sample=per_sample, log_eps=p.rrr_log == "log_eps")
    if name == "gradmask":
        return GradMask(lam, per_sample=per_sample)
    return METHODS[name](lam)


__all__ = ["METHODS", "Method", "build_method", "ERM", "ActDiff", "RRR", "GradMask"]
