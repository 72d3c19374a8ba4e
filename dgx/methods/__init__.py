"""Training objectives: ERM and the mask-based methods of the paper.

An explicit registry: add a method by adding a file (a Method subclass with
its traits and ``from_config``) and a line here.
"""

from __future__ import annotations

from types import SimpleNamespace

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


BASELINE = "erm"  # the method every table compares against


def method_class(name: str) -> type[Method]:
    """The registered class of ``name``; unknown names list the valid ones."""
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    return METHODS[name]


def uses_mask(name: str) -> bool:
    return method_class(name).uses_mask


def display_name(name: str) -> str:
    return method_class(name).display_name if name in METHODS else name


def paper_epochs(name: str) -> int:
    return method_class(name).paper_epochs


def build_method(name: str, lam: float = 0.0, options: dict[str, str] | None = None, profile: Profile | None = None,
                 shuffle_seed: int | None = None) -> Method:
    """Instantiate a registered method with its ``options`` (Method.Options) and a profile's switches (default:
    ``paper``). ``shuffle_seed``: ActDiff's fixed per-image shuffle (the released periphery path).
    """
    cfg = SimpleNamespace(lam=lam, method_options=tuple(sorted((options or {}).items())))
    return method_class(name).from_config(cfg, profile or PROFILES["paper"], shuffle_seed)


__all__ = ["METHODS", "BASELINE", "Method", "build_method", "method_class", "uses_mask", "display_name",
           "paper_epochs", "ERM", "ActDiff", "RRR", "GradMask"]
