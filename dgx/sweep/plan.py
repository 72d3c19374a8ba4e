"""A sweep's plans: what each study searches and retrains, and the studies' names.

:class:`SweepPlan` is one study pair (search, then ``<study>.seeds``) as the driver
(:mod:`dgx.sweep.study`) runs it and a ``dgx worker`` rebuilds it from the storage;
:func:`plans_for` gives a sweep request's plans: the method's, and beside it the ERM
baseline's and the oracle's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace

import numpy as np
import optuna

from dgx.data import oracle_options
from dgx.errors import DgxError
from dgx.methods import BASELINE, uses_mask
from dgx.models import resolve_weights
from dgx.selection import DEFAULT_RULE
from dgx.spec import SweepRequest, TrainConfig
from dgx.space import Budget


@dataclass
class SweepPlan:
    base: TrainConfig  # fixed settings; grid params and seed are filled in per trial
    budget: Budget
    study: str  # search study name; seeds go to "<study>.seeds"
    storage: str  # Optuna storage URL
    trials: int | None = None  # cap on grid points (None = whole grid)
    seeds: int = 3  # seeds-phase size
    device: str = "auto"
    sampler: str = "grid"  # grid (exact, the paper's) | tpe | random (over the same grid values)
    pruner: str = "none"  # none | median | hyperband, acting on per-epoch source-val AUROC
    variant: str = ""  # "oracle": ERM on the source with its shortcut decorrelated (a reference row)
    pack: int = 1  # this worker trains up to this many grid points of one λ and seed as one pack (dgx/pack.py)
    select: str = DEFAULT_RULE  # which grid point the seeds phase retrains (dgx/selection.py): val (the paper's) | ...

    @property
    def grid(self) -> dict[str, list[float]]:
        return self.budget.grid_for(self.base.method)

    def oracle(self) -> SweepPlan | None:
        """This plan on the dataset's oracle source (its known shortcut decorrelated from the label),
        as study ``<study>-oracle``; None where the dataset has no oracle."""
        options = oracle_options(self.base.dataset, self.base.data_options)
        if options is None:
            return None
        return replace(self, base=replace(self.base, data_options=options), variant="oracle",
                       study=f"{self.study}-oracle")

    @property
    def n_points(self) -> int:
        n = len(self.budget.points(self.base.method))
        return min(n, self.trials) if self.trials else n

    def to_attrs(self) -> dict:
        """What a ``dgx worker`` needs to rebuild this plan from the study alone."""
        return {"budget": self.budget.name, "grid": self.grid, "seeds": self.seeds, "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner, "variant": self.variant, "select": self.select}

    @classmethod
    def from_study(cls, study: optuna.Study, device: str = "auto") -> "SweepPlan":
        """The plan a sweep stored on its search study (DgxError if it was not made by ``dgx sweep``)."""
        attrs = study.user_attrs
        if "plan" not in attrs or "base_config" not in attrs:
            raise DgxError(f"study {study.study_name!r} was not created by `dgx sweep` (no stored plan); "
                           "start it with `dgx sweep ... --storage URL` first")
        plan = attrs["plan"]
        base = TrainConfig.from_dict(attrs["base_config"])
        budget = Budget(name=plan["budget"], description="", grid={k: list(v) for k, v in plan["grid"].items()},
                        seeds=int(plan["seeds"]))
        return cls(base=base, budget=budget, study=study.study_name, storage="", trials=plan["trials"],
                   seeds=int(plan["seeds"]), device=device, sampler=plan["sampler"], pruner=plan["pruner"],
                   variant=str(plan.get("variant", "")), select=str(plan.get("select", DEFAULT_RULE)))

    def grid_points(self) -> list[dict]:
        """The points this sweep searches: the grid in a seeded shuffled order, capped at ``trials``.

        Shuffling (seed 0) spreads a capped search over the grid instead of
        taking its lexicographically first corner; the order never changes, so
        a rerun with the same cap asks for the same points.
        """
        points = self.budget.points(self.base.method)
        order = np.random.default_rng(0).permutation(len(points))
        return [points[i] for i in order[: self.n_points]]


def plans_for(req: SweepRequest, cfg: TrainConfig, budget: Budget, url: str) -> list[SweepPlan]:
    """The plans of a sweep request whose training resolved to ``cfg`` and ``budget``: the method's, then
    the ERM baseline's and the oracle's (unless the request leaves them out or the method is ERM)."""
    name = req.study or study_name(cfg, budget, select=req.select)
    plan = SweepPlan(base=cfg, budget=budget, study=name, storage=url, trials=req.trials,
                     seeds=req.seeds or budget.seeds, device=req.train.device, sampler=req.sampler,
                     pruner=req.pruner, pack=req.pack, select=req.select)
    plans = [plan]
    if req.baseline and cfg.method != BASELINE:
        erm = replace(cfg, method=BASELINE, mask="none", lam=0.0, method_options=(), negative_masks="ones")
        erm_plan = replace(plan, base=erm, study=study_name(erm, budget, prefix=req.study))
        oracle_plan = erm_plan.oracle() if req.oracle else None
        plans += [erm_plan] + ([oracle_plan] if oracle_plan else [])
    return plans


# A study whose fixed settings differ from its budget's (a flag or data option overrode them) carries a
# short hash of those differences (runs.OVERRIDDEN): `dgx sweep rrr --mask periphery --epochs 1` and the plain
# command get different studies, and `dgx report` without --study reports the plain ones.
_NAMED = ("method", "mask", "dataset", "profile", "negative_masks", "lr", "wd", "lam", "seed")  # in the name or varying


def overrides(cfg, budget: Budget) -> dict:
    """The fixed settings of ``cfg`` that differ from what ``budget`` gives its method, mask and data alone."""
    train = budget.train
    model = train.get("model", "resnet50")
    default = replace(cfg, data_options=(), image_size=train.get("image_size"), model=model,
                      weights=resolve_weights(model, train.get("weights", "imagenet")), batch_size=16,
                      epochs=int(train.get("epochs", 0)), method_options=())
    mine, base = cfg.to_dict(), default.to_dict()
    return {k: mine[k] for k in sorted(mine) if k not in _NAMED and mine[k] != base[k]}


def study_name(cfg, budget: Budget, prefix: str | None = None, select: str = "val") -> str:
    """METHOD-MASK-DATA-BUDGET[-PROFILE][-oHASH][-select-RULE], or PREFIX-METHOD for a baseline next to a named study.

    ``-oHASH``: six hex digits of the settings a flag changed from the budget's (:func:`overrides`).
    A selection rule other than the paper's names its own study (its seeds phase may retrain another
    point; the search's trainings are shared through their run folders). A method without a mask or λ
    selects alike under every rule, so its study is shared too."""
    if prefix:
        return f"{prefix}-{cfg.method}"
    negatives = "" if cfg.negative_masks == "ones" else f"-neg{cfg.negative_masks}"
    profile = "" if cfg.profile == "paper" else f"-{cfg.profile}"
    changed = overrides(cfg, budget)
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:6]
    tag = f"-o{digest}" if changed else ""
    rule = f"-select-{select}" if select != "val" and uses_mask(cfg.method) else ""
    return f"{cfg.method}-{cfg.mask}{negatives}-{cfg.dataset}-{budget.name}{profile}{tag}{rule}"


__all__ = ["SweepPlan", "plans_for", "study_name", "overrides"]
