"""What dgx is asked to do, as typed, frozen values (no torch, no Optuna).

- :class:`TrainRequest`: one training as a command's flags give it (``dgx train``, and the training part
  of ``dgx sweep``); unset fields (None) come from the budget.
- :class:`SweepRequest`: a sweep: a TrainRequest and how to search, where to store, who works.
- :class:`ReproduceRequest`: a paper experiment from ``sweeps/paper/`` and the flags that override its spec.
- :class:`TrainConfig`: a resolved training (flags merged over a budget, :func:`dgx.resolve.resolve_config`):
  everything that determines a run's result; its hash names the run folder.

A command builds its request field by field and calls ``.check()`` once, before any slow import: what the
flags' text alone can show (names, ranges, KEY=VALUE syntax, folders) fails there in one line. The library
(:func:`dgx.resolve.train_one`, :func:`dgx.sweep.command.sweep`, :func:`dgx.sweep.paper.reproduce`) takes
the request whole, so a renamed field fails loudly instead of being dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from dgx.checks import (LAUNCHERS, PRUNERS, SAMPLERS, SELECTION_RULES, check_choice, check_device, check_folder,
                        check_name, check_number, check_seed, check_storage_url, check_study, parse_gpus,
                        parse_options)
from dgx.config import get_settings
from dgx.data import DATASETS, check_options
from dgx.data.base import MASK_KINDS, NEGATIVE_MASKS
from dgx.errors import DgxError
from dgx.methods import METHODS, method_class, paper_epochs, uses_mask
from dgx.profiles import PROFILES

PACKED_FIELDS = ("lr", "wd")  # what may differ between the trainings of one pack (dgx/pack.py)


@dataclass(frozen=True)
class TrainRequest:
    """One training as asked: None = the budget's value."""

    method: str  # erm | actdiff | rrr | gradmask
    mask: str | None = None  # None: abnormality (erm: none)
    data: str = "decoy-cxr"
    data_opts: tuple[str, ...] = ()  # dataset options, KEY=VALUE (--data-opt)
    method_opts: tuple[str, ...] = ()  # the method's own options, KEY=VALUE (--method-opt; Method.Options)
    budget: str = "quick"
    lr: float | None = None
    wd: float | None = None
    lam: float | None = None
    epochs: int | None = None
    seed: int = 0
    model: str | None = None
    weights: str | None = None
    image_size: int | None = None
    batch_size: int = 16
    negative_masks: str | None = None
    profile: str | None = None
    device: str = "auto"
    runs_dir: Path | None = None  # None: DGX_RUNS_DIR

    def check(self, *, here: bool = True) -> TrainRequest:
        """What the flags' text alone can show (``here``: the device is this machine's, not a SLURM node's).

        Also reads the settings (environment and .env) and checks that the runs and data folders are folders
        dgx can write; the dataset options' values that need the image size are checked when the budget is
        read (:func:`dgx.resolve.resolve_config`)."""
        settings = get_settings()
        # An empty value would silently fall back to the budget's ("" is false): it is a mistake.
        for flag, value, example in (("--mask", self.mask, "periphery"), ("--model", self.model, "resnet18"),
                                     ("--weights", self.weights, "none"), ("--profile", self.profile, "paper"),
                                     ("--negative-masks", self.negative_masks, "ones")):
            check_name(flag, value, example)
        weights = self.weights
        if weights and weights.strip() and weights != "none" and weights.split(":")[0] != "imagenet" \
                and not Path(weights).is_file():
            raise DgxError(f"weights file {weights} does not exist; pass --weights imagenet, --weights none or a "
                           "path to a state dict")
        check_choice("method", self.method, METHODS)
        check_choice("mask", self.mask, MASK_KINDS)
        check_choice("dataset", self.data, DATASETS)
        check_choice("--negative-masks value", self.negative_masks, NEGATIVE_MASKS)
        check_choice("profile", self.profile, PROFILES)
        method_class(self.method).parse_options(self.method_options())
        check_number("--lr", self.lr, positive=True)
        check_number("--wd", self.wd)
        check_number("--lam", self.lam)
        check_seed(self.seed)
        if self.batch_size < 1:
            raise DgxError(f"--batch-size must be >= 1, got {self.batch_size}")
        check_device(self.device, here=here)
        check_folder(self.runs_dir if self.runs_dir is not None else settings.runs_dir,
                     "--runs-dir" if self.runs_dir is not None else "DGX_RUNS_DIR")
        check_folder(settings.data_dir, "DGX_DATA_DIR")
        # names and types; the value checks need the image size, which may come from the budget
        check_options(self.data, dict(self.data_options()), self.image_size, complete=self.image_size is not None)
        if self.budget:  # "": a sweep chooses it after these checks (dgx/cli/sweep.py: default_budget)
            from dgx.space import load_budget  # optuna, yaml: once the flags' own text has passed

            load_budget(self.budget)
        return self

    def data_options(self) -> tuple[tuple[str, str], ...]:
        return parse_options(list(self.data_opts))

    def method_options(self) -> tuple[tuple[str, str], ...]:
        return parse_options(list(self.method_opts), "--method-opt", "layers=last")


@dataclass(frozen=True)
class SweepRequest:
    """A sweep as asked: the training, the search, its storage and its workers."""

    train: TrainRequest
    trials: int | None = None  # cap on grid points; None = the whole grid
    seeds: int | None = None  # seeds-phase size; None = the budget's
    storage: str | None = None  # Optuna URL; None = DGX_STORAGE or the SQLite default
    study: str | None = None  # None = METHOD-MASK-DATA-BUDGET[...]
    sampler: str = "grid"
    pruner: str = "none"
    baseline: bool = True  # also sweep ERM
    oracle: bool = True  # and the oracle, where the dataset has one
    workers: int | None = None  # None = one per GPU, else 1 (this process); 0 = only queue
    gpus: str | None = None
    launcher: str = "process"
    partition: str = ""
    time_min: int = 24 * 60
    trials_per_gpu: int = 1
    pack: int = 1
    select: str = "val"
    budget_note: str = ""  # why this budget, when none was named (the header prints it)

    def check(self) -> SweepRequest:
        check_study("--study", self.study)
        check_choice("--select rule", self.select, SELECTION_RULES)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        check_choice("launcher", self.launcher, LAUNCHERS)
        parse_gpus(self.gpus)
        check_storage_url(self.storage)
        for flag, value in (("--trials", self.trials), ("--seeds", self.seeds)):
            if value is not None and value < 1:
                raise DgxError(f"{flag} must be >= 1, got {value}; leave {flag} out for the budget's")
        if self.pack < 1:
            raise DgxError(f"--pack must be >= 1, got {self.pack}; 1 trains one trial at a time")
        self.train.check(here=self.launcher == "process")  # SLURM jobs run on other machines
        return self


@dataclass(frozen=True)
class ReproduceRequest:
    """A paper experiment (``sweeps/paper/NAME.yaml``, or all) and the flags that override its spec."""

    name: str
    data: str | None = None
    data_opts: tuple[str, ...] = ()
    budget: str | None = None
    trials: int | None = None
    seeds: int | None = None
    epochs: int | None = None
    model: str | None = None
    weights: str | None = None
    image_size: int | None = None
    profile: str | None = None
    storage: str | None = None
    dry_run: bool = False  # list the studies and their estimated cost, then stop
    workers: int | None = None
    gpus: str | None = None
    device: str = "auto"
    pruner: str = "none"
    throughput: str | None = None  # the measured table behind the GPU-hour estimate
    pack: int = 1
    select: str | None = None

    def check(self) -> ReproduceRequest:
        check_device(self.device, here=not self.dry_run)  # the workers it starts run on this machine
        check_storage_url(self.storage)
        parse_gpus(self.gpus)
        check_choice("dataset", self.data, DATASETS)  # the overrides, before the specs are planned
        check_choice("profile", self.profile, PROFILES)
        check_choice("pruner", self.pruner, PRUNERS)
        check_choice("--select rule", self.select, SELECTION_RULES)
        parse_options(list(self.data_opts))
        if self.pack < 1:
            raise DgxError(f"--pack must be >= 1, got {self.pack}; 1 trains one trial at a time")
        return self

    def train(self, method: str, mask: str, data: str, budget: str, profile: str) -> TrainRequest:
        """The training of one of a spec's experiments, with this request's overrides."""
        return TrainRequest(method=method, mask=mask, data=self.data or data, data_opts=self.data_opts,
                            budget=self.budget or budget, epochs=self.epochs, model=self.model, weights=self.weights,
                            image_size=self.image_size, profile=self.profile or profile, device=self.device)


# A method option KEY is stored in a config's dict (the run-folder hash, the study's fixed settings, W&B's
# config) as METHOD_KEY. ActDiff's layer set was a field of every TrainConfig before method options moved
# out of it, so every config's dict keeps it (default "all"): the hashes, and so the run folders and studies
# written before, stay the same (tests/test_spec.py recomputes one the old way).
_ALWAYS_STORED = {"actdiff_layers": "all"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's result; its hash names the run folder."""

    method: str = "erm"  # objective: erm | actdiff | rrr | gradmask
    mask: str = "none"  # attribution mask the method constrains to (erm ignores it)
    dataset: str = "decoy-cxr"  # registered dataset: source splits + OOD targets
    data_options: tuple[tuple[str, str], ...] = ()  # dataset options (sorted KEY=VALUE pairs)
    image_size: int | None = None  # side in pixels; None = the dataset's default
    model: str = "resnet50"  # torchvision classifier (paper: ResNet-50)
    weights: str = "imagenet"  # imagenet | none | PATH (paper: ImageNet-pretrained)
    lr: float = 1e-4  # Adam learning rate (paper's best: 1e-4)
    wd: float = 0.0  # Adam weight decay (paper's best: 0)
    lam: float = 0.0  # penalty weight λ; erm has none
    batch_size: int = 16  # paper: 16
    epochs: int = 0  # 0 = paper's setting: 15 for ERM, 100 for the others
    seed: int = 0  # init, batch order and ActDiff shuffles
    method_options: tuple[tuple[str, str], ...] = ()  # the method's own options (sorted KEY=VALUE pairs)
    negative_masks: str = "ones"  # unannotated images' mask: ones (paper) | lungs | periphery (dgx)
    profile: str = "paper"  # paper (the paper's text) | official (the released code), see dgx/profiles.py

    @property
    def num_epochs(self) -> int:
        return self.epochs or paper_epochs(self.method)  # §4: ERM 15, the mask methods 100

    def options(self):
        """The method's options (its ``Options`` dataclass), defaults filled in."""
        return method_class(self.method).parse_options(self.method_options)

    def to_dict(self) -> dict:
        """The stored form: the run-folder hash, the study's fixed settings and W&B's config read it."""
        d = dataclasses.asdict(self)
        d["data_options"] = dict(self.data_options)
        d["epochs"] = self.num_epochs
        del d["method_options"]
        d.update(_ALWAYS_STORED)
        d.update({f"{self.method}_{k}": v for k, v in dataclasses.asdict(self.options()).items()})
        return d

    @classmethod
    def from_dict(cls, stored: dict) -> TrainConfig:
        """The config of a stored dict (:meth:`to_dict`)."""
        d = dict(stored)
        method = str(d.get("method", "erm"))
        prefix = f"{method}_"
        names = {f.name for f in dataclasses.fields(method_class(method).Options)}
        options = tuple(sorted((k[len(prefix):], str(d[k])) for k in d if k.startswith(prefix)
                               and k[len(prefix):] in names))
        for k in [*_ALWAYS_STORED, *(prefix + name for name, _ in options)]:
            d.pop(k, None)
        d["data_options"] = tuple(sorted((str(k), str(v)) for k, v in dict(d.get("data_options") or {}).items()))
        return cls(**d, method_options=options)

    def pack_key(self) -> TrainConfig:
        """Configs with equal keys can train as one pack (they differ at most in :data:`PACKED_FIELDS`)."""
        return dataclasses.replace(self, **{f: type(getattr(self, f))(0) for f in PACKED_FIELDS})

    def label(self) -> str:
        """How progress lines name this training: method, mask, grid point and seed."""
        lam = f" λ={self.lam:g}" if uses_mask(self.method) else ""
        return f"{self.method}/{self.mask} lr={self.lr:g} wd={self.wd:g}{lam} seed {self.seed}"

    def run_id(self, data: str = "") -> str:
        """Run-folder name: hash of the config and of the data's content fingerprint.

        The fingerprint is part of it so that a changed generator or a rebuilt
        cache never serves a result trained on other pixels.
        """
        blob = json.dumps({**self.to_dict(), "data_fingerprint": data}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


__all__ = ["TrainRequest", "SweepRequest", "ReproduceRequest", "TrainConfig", "PACKED_FIELDS"]
