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

METHODS: dict[str, type[Method]] = {
    "erm": ERM,
    "actdiff": ActDiff,
    "rrr": RRR,
    "gradmask": GradMask,
}


def build_method(name: str, lam: float = 0.0, actdiff_layers: str = "all") -> Method:
    """Instantiate a registered method; unknown names list the valid ones."""
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    if name == "actdiff":
        return ActDiff(lam, layers=actdiff_layers)  # type: ignore[arg-type]
    return METHODS[name](lam)


__all__ = ["METHODS", "Method", "build_method", "ERM", "ActDiff", "RRR", "GradMask"]
