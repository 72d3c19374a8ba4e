"""The training loop: one function, read top to bottom.

Adam + cosine schedule; model selection on **source validation** only: AUROC
(``paper`` profile) or, as the released code did, accuracy with later ties
winning (``official``); targets are evaluated once, on the selected checkpoint,
and never used to choose anything. The profile (dgx/profiles.py) also decides
the source split, the masks' geometry, the input normalization and the methods'
switches. Every epoch is checkpointed, so an interrupted run resumes
where it stopped and finishes with exactly the metrics of an uninterrupted one
(on CPU). A run folder is named by the hash of its config (DomainBed's idea),
so rerunning a finished config returns its stored result at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from dgx import runs
from dgx.data.base import Bundle, Split
from dgx.data.loader import Resident, batches, num_batches
from dgx.data.profile import for_profile
from dgx.errors import DgxError
from dgx.methods import method_class, paper_epochs
from dgx.models import InputNormalizer, build_model
from dgx.profiles import get_profile
from dgx.progress import make_progress
from dgx.threads import training_share

log = logging.getLogger("dgx")


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
    actdiff_layers: str = "all"  # ActDiff: all hooked layers, or only the last
    negative_masks: str = "ones"  # unannotated images' mask: ones (paper) | lungs | periphery (dgx)
    profile: str = "paper"  # paper (the paper's text) | official (the released code), see dgx/profiles.py

    @property
    def num_epochs(self) -> int:
        return self.epochs or paper_epochs(self.method)  # §4: ERM 15, the mask methods 100

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data_options"] = dict(self.data_options)
        d["epochs"] = self.num_epochs
        return d

    def label(self) -> str:
        """How progress lines name this training: method, mask, grid point and seed."""
        from dgx.methods import uses_mask

        lam = f" λ={self.lam:g}" if uses_mask(self.method) else ""
        return f"{self.method}/{self.mask} lr={self.lr:g} wd={self.wd:g}{lam} seed {self.seed}"

    def run_id(self, data: str = "") -> str:
        """Run-folder name: hash of the config and of the data's content fingerprint.

        The fingerprint is part of it so that a changed generator or a rebuilt
        cache never serves a result trained on other pixels.
        """
        blob = json.dumps({**self.to_dict(), "data_fingerprint": data}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    val_auroc: float  # source-validation AUROC of the selected checkpoint (the sweep's objective)
    best_epoch: int  # 1-based epoch of the selected checkpoint
    auroc: dict[str, float]  # selected checkpoint's test AUROC per domain (source test + targets)
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_auroc, lr
    resumed_from: int = 0  # epochs already done when this process started
    wall_s: float = 0.0  # seconds spent by this process
    val_accuracy: float = math.nan  # source-validation accuracy of the selected checkpoint
    selection: str = "auroc"  # what chose the checkpoint: auroc (strict >) | accuracy (>=, the released code)
    # What the other grid-point rules read (dgx/selection.py), of the selected checkpoint; NaN where n/a.
    val_auroc_low: float = math.nan  # lower end of the source-validation AUROC's 95% DeLong interval
    val_shuffled_auroc: float = math.nan  # AUROC on the validation images with their background shuffled
    val_swapped_auroc: float = math.nan  # AUROC on the validation images with the other class's background


RESIDENT_SHARE = 0.25  # the training split moves to the GPU when it takes at most this share of free memory
RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(TrainResult))
SELECTION_FIELDS = ("val_auroc_low", "val_shuffled_auroc", "val_swapped_auroc")  # what dgx/selection.py reads


def save_groups(run_dir: Path, domains: dict) -> None:
    """The scored splits' subgroup keys next to ``scores.npz``, in the same image order (local only)."""
    keys = {name: split.groups for name, split in domains.items() if split.groups}
    if keys:
        runs.save_groups(Path(run_dir) / runs.GROUPS, keys)


class NonFiniteLossError(RuntimeError):
    """Training diverged; the run cannot continue (sweeps record it and move on)."""


def train(
    cfg: TrainConfig,
    data: Bundle,
    run_dir: Path,
    *,
    device: str = "auto",
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: object = True,  # True/False, or a caller's progress bar to add this run's task to
    eval_batch_size: int = 128,
) -> TrainResult:
    """Train ``cfg`` on ``data``'s source, select on its val split, test on all domains.

    ``on_epoch(epoch, stats)`` is called after each epoch's checkpoint is saved
    (for tracking and pruning; it may raise to stop the run).
    """
    run_dir = Path(run_dir)
    if (stored := _stored(run_dir, data, cfg, device)) is not None:
        return stored
    started = time.perf_counter()
    profile = get_profile(cfg.profile)
    data = for_profile(data, profile, cfg.seed, cfg.mask)
    steps = _steps(cfg, data)
    run = _Run(cfg, profile, _device(device), run_dir)
    with training_share() as share:  # this process's fair share of the machine's cores (dgx/threads.py)
        bar, own_bar = _progress(progress)
        task = bar.add_task(cfg.label(), total=run.epochs * steps,
                            completed=run.start * steps, status="")
        try:
            for epoch in range(run.start, run.epochs):
                share.apply()  # other trainings on this machine may have started or stopped
                train_loss = run.train_epoch(data.train, epoch, steps, lambda: bar.advance(task))
                stats = run.evaluate_and_select(data.val, epoch, train_loss, eval_batch_size)
                run.save_last()
                bar.update(task, status=run.status(stats))
                if on_epoch is not None:
                    on_epoch(epoch + 1, stats)
            bar.remove_task(task)
            task = None
            return run.finish(data, eval_batch_size, started, bar=bar)
        finally:
            if own_bar:
                bar.stop()
            elif task is not None:  # stopped mid-training
                bar.remove_task(task)


def train_packed(
    cfgs: list[TrainConfig],
    data: Bundle,
    run_dirs: list[Path],
    *,
    device: str = "auto",
    on_epoch: Callable[[int, int, dict], None] | None = None,
    progress: object = True,
    eval_batch_size: int = 128,
) -> list[TrainResult | Exception]:
    """Train configs that differ only in learning rate and weight decay as one pack (dgx/pack.py).

    Each member keeps its own run folder, written exactly as :func:`train` writes it (so a pack resumes
    alone or packed, and a finished folder serves either), and its result equals the one trained alone
    within float tolerance. ``on_epoch(i, epoch, stats)`` is called for ``cfgs[i]``; an exception it raises
    (e.g. a pruned trial) stops that member only, as does a non-finite loss; the list returned holds each
    config's TrainResult or the exception that stopped it. Members resumed at different epochs train as
    separate packs.
    """
    from dgx.pack import check_packable

    outcomes: list[TrainResult | Exception | None] = [_stored(Path(d), data, c, device) for c, d in zip(cfgs, run_dirs)]
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if not todo:
        return outcomes
    started = time.perf_counter()
    profile = get_profile(cfgs[0].profile)
    check_packable([cfgs[i] for i in todo], profile)
    data = for_profile(data, profile, cfgs[0].seed, cfgs[0].mask)
    steps = _steps(cfgs[0], data)
    dev = _device(device)
    members = {i: _Run(cfgs[i], profile, dev, Path(run_dirs[i])) for i in todo}
    with training_share():  # this process's fair share of the machine's cores (dgx/threads.py)
        bar, own_bar = _progress(progress)
        try:
            for start in sorted({m.start for m in members.values()}):
                group = {i: m for i, m in members.items() if m.start == start}
                for i, outcome in _Pack(group, bar, steps).train(data, on_epoch, eval_batch_size, started).items():
                    outcomes[i] = outcome
        finally:
            if own_bar:
                bar.stop()
    return outcomes


class _Pack:
    """Members (each a _Run: its own run folder, model, optimizer and schedule) trained as one wide network.

    After every epoch the pack's weights and optimizer state are copied back into the members, which then
    step their own schedules, select and checkpoint exactly as alone; a member that stops (pruned, or a
    non-finite loss) leaves the pack, which is rebuilt from the members that remain.
    """

    def __init__(self, members: dict[int, _Run], bar, steps: int) -> None:
        self.members, self.bar, self.steps = dict(members), bar, steps
        first = next(iter(members.values()))
        self.cfg, self.dev, self.cuda, self.method = first.cfg, first.dev, first.cuda, first.method
        self.normalize, self.amp, self.profile, self.epochs = first.normalize, first.amp, first.profile, first.epochs
        self.resident = first.resident
        self.start = first.start
        self._build()

    def _build(self) -> None:
        from dgx.pack import PackedAdam, pack_models
        runs_ = list(self.members.values())
        self.model = pack_models([m.model for m in runs_]).to(self.dev)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = PackedAdam(list(self.model.parameters()), len(runs_), betas=runs_[0].opt.defaults["betas"],
                              eps=runs_[0].opt.defaults["eps"])
        self.opt.load_members([m.opt.state_dict() for m in runs_])
        self.opt.wd = torch.tensor([m.cfg.wd for m in runs_], dtype=torch.float64)
        self._rates()

    def _rates(self) -> None:
        self.opt.lr = torch.tensor([m.opt.param_groups[0]["lr"] for m in self.members.values()], dtype=torch.float64)

    def _sync(self) -> None:
        """The pack's weights and Adam state into each member's own model and optimizer."""
        from dgx.pack import load_members
        runs_ = list(self.members.values())
        load_members(self.model, [m.model for m in runs_])
        for k, m in enumerate(runs_):
            m.opt.load_state_dict(self.opt.member_state(k, m.opt))

    def train(self, data: Bundle, on_epoch, eval_batch_size: int, started: float) -> dict[int, TrainResult | Exception]:
        cfg, out = self.cfg, {}
        task = self.bar.add_task(f"{cfg.method}/{cfg.mask} λ={cfg.lam:g} seed {cfg.seed} ×{len(self.members)} packed (lr, wd)",
                                 total=self.epochs * self.steps, completed=self.start * self.steps, status="")
        try:
            for epoch in range(self.start, self.epochs):
                losses = epoch_losses(self, data.train, epoch, self.steps, lambda: self.bar.advance(task))
                self._sync()
                scores = predict(self.model, data.val, self.dev, eval_batch_size, self.profile.normalization)
                stopped = []
                for k, (i, member) in enumerate(self.members.items()):
                    try:
                        check_finite(float(losses[k]), epoch)
                        member.opt.step()  # no gradients: a no-op that lets its schedule step without a warning
                        member.step_schedule()
                        stats = member.evaluate_and_select(data.val, epoch, float(losses[k]), eval_batch_size,
                                                           scores=scores[:, k])
                        member.save_last()
                        if on_epoch is not None:
                            on_epoch(i, epoch + 1, stats)
                    except Exception as exc:  # noqa: BLE001 - this member stops; the others go on
                        out[i] = exc
                        stopped.append(i)
                self.bar.update(task, status=f"{len(self.members) - len(stopped)} training")
                if stopped:
                    self.members = {i: m for i, m in self.members.items() if i not in stopped}
                    if not self.members:
                        return out
                    self._build()
                else:
                    self._rates()
        finally:
            self.bar.remove_task(task)
        return {**out, **self._finish(data, eval_batch_size, started)}

    def _finish(self, data: Bundle, batch_size: int, started: float) -> dict[int, TrainResult]:
        """Each member's selected checkpoint, scored on every domain in one packed pass per domain."""
        from dgx.pack import pack_models
        runs_ = list(self.members.values())
        for m in runs_:
            m.load_best()
        scorer = pack_models([m.model for m in runs_]).to(self.dev)
        if self.cuda:
            scorer = scorer.to(memory_format=torch.channels_last)
        domains = {data.source: data.test, **data.targets, **selection_splits(data, self.cfg.mask)}
        scores = score(scorer, domains, self.dev, batch_size, self.profile.normalization, self.bar)
        return {i: m.finish(data, batch_size, started, scores={name: s[:, k] for name, s in scores.items()})
                for k, (i, m) in enumerate(self.members.items())}


def selection_splits(data: Bundle, mask: str) -> dict[str, Split]:
    """The source-validation splits the selection rules score a finished run on (dgx/selection.py): the
    validation split, and its shuffled-background copy where ``mask`` gives one."""
    from dgx.selection import shuffled_background, swapped_background

    out = {VAL: data.val}
    if mask != "none" and mask in data.val.masks:
        for name, copies in ((VAL_SWAPPED, swapped_background), (VAL_SHUFFLED, shuffled_background)):
            if (split := copies(data.val, mask)) is not None:
                out[name] = split
    return out


VAL, VAL_SHUFFLED, VAL_SWAPPED = "(val)", "(val, shuffled)", "(val, swapped)"  # never a domain's name


def _stored(run_dir: Path, data: Bundle, cfg: TrainConfig, device: str = "auto") -> TrainResult | None:
    """The run folder's finished result when it verifies; a folder that does not is quarantined (None)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / runs.RESULT).exists():
        return None
    stored, problems = runs.verify(run_dir)
    if not problems:
        if not (run_dir / runs.GROUPS).exists():  # a run from before subgroup keys were stored
            save_groups(run_dir, {data.source: data.test, **data.targets})
        if any(k not in stored for k in SELECTION_FIELDS):  # a run from before the selection rules' numbers
            stored = _backfill_selection(run_dir, data, cfg, _device(device), stored)
        return TrainResult(**{k: stored[k] for k in RESULT_FIELDS if k in stored})
    runs.quarantine(run_dir, problems[0])
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _backfill_selection(run_dir: Path, data: Bundle, cfg: TrainConfig, dev: torch.device, stored: dict) -> dict:
    """A finished run from before the selection rules' numbers were recorded: its selected checkpoint scored
    on them now, and its result.json rewritten with them (the sealed files are unchanged)."""
    profile = get_profile(cfg.profile)
    data = for_profile(data, profile, cfg.seed, cfg.mask)
    model = build_model(cfg.model, "none").to(dev)
    model.load_state_dict(torch.load(run_dir / runs.BEST, map_location=dev, weights_only=True))
    splits = selection_splits(data, cfg.mask)
    scores = {name: predict(model, split, dev, normalization=profile.normalization) for name, split in splits.items()}
    stored = {**stored, **{k: math.nan for k in SELECTION_FIELDS}, **_selection_numbers(splits, scores)}
    runs.atomic_write_text(run_dir / runs.RESULT, json.dumps(stored, indent=1))
    return stored


def _steps(cfg: TrainConfig, data: Bundle) -> int:
    """Optimizer steps per epoch; checked before any model is built: an "empty" run must never be stored."""
    steps = num_batches(data.train, cfg.batch_size, drop_last=True)
    if steps == 0:
        raise DgxError(f"batch size {cfg.batch_size} is larger than the {len(data.train)} training images of "
                       f"{data.source}: no optimizer step would run; lower --batch-size or use more training images")
    return steps


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _Run:
    """One training's state: model, objective, optimizer, schedule and the selection so far.

    Built fresh, or resumed from the run folder's ``last.pt`` with everything
    that influences what comes next (weights, optimizer, schedule, RNG, history).
    """

    def __init__(self, cfg: TrainConfig, profile, dev: torch.device, run_dir: Path) -> None:
        self.cfg, self.profile, self.dev, self.dir = cfg, profile, dev, run_dir
        self.cuda = dev.type == "cuda"
        self.epochs = cfg.num_epochs
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, cfg.weights).to(dev)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        # The released periphery path reseeded its shuffle with the run's seed on every call.
        fixed_shuffle = cfg.seed if profile.shuffle == "released" and cfg.mask == "periphery" else None
        self.method = method_class(cfg.method).from_config(cfg, profile, fixed_shuffle)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.epochs)
        self.epoch_lr = cfg.lr  # the rate of the epoch in training (step_schedule)
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()
        self.normalize = InputNormalizer(profile.normalization)  # reused input buffers on CPU (see dgx.models)
        self.by_accuracy = profile.select == "accuracy"
        self.start, self.best_val, self.best_epoch, self.history = 0, -math.inf, 0, []
        if (run_dir / runs.LAST).exists():
            try:
                self._resume()
            except Exception as exc:  # noqa: BLE001 - a truncated, foreign or tampered checkpoint
                # Start over from a clean state (the failed load may have changed some of it).
                runs.quarantine(run_dir, f"{runs.LAST} cannot be resumed ({type(exc).__name__})")
                run_dir.mkdir(parents=True, exist_ok=True)
                self.__init__(cfg, profile, dev, run_dir)

    def _resume(self) -> None:
        # weights_only: tensors, numbers, strings and containers; a checkpoint that needs more is refused.
        ck = torch.load(self.dir / runs.LAST, map_location=self.dev, weights_only=True)
        if ck.get("best_epoch", 0) > 0:  # the selected checkpoint must load too, or finishing would fail
            torch.load(self.dir / runs.BEST, map_location="cpu", weights_only=True)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["rng"])
        if self.cuda and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"])
        self.start, self.best_val, self.best_epoch, self.history = ck["epoch"], ck["best_val"], ck["best_epoch"], ck["history"]
        log.info("resuming %s from epoch %d/%d", self.dir.name, self.start, self.epochs)

    def resident(self, split: Split) -> Resident | None:
        """The training split on the GPU when it takes at most a quarter of the free memory, else None (the
        host loader). Built once per run; CPU training always uses the host loader."""
        if not hasattr(self, "_resident"):
            self._resident = None
            if self.cuda and Resident.nbytes(split, self.cfg.mask) <= RESIDENT_SHARE * torch.cuda.mem_get_info(self.dev)[0]:
                self._resident = Resident(split, self.cfg.mask, self.cfg.negative_masks, self.dev)
        return self._resident

    def train_epoch(self, split: Split, epoch: int, steps: int, advance: Callable[[], None]) -> float:
        """One pass over the training split; the mean training loss (raises if it is not finite)."""
        train_loss = float(epoch_losses(self, split, epoch, steps, advance))
        check_finite(train_loss, epoch)
        self.step_schedule()
        return train_loss

    def step_schedule(self) -> None:
        """The epoch is trained: keep the learning rate it used (for its stats), then step the schedule."""
        self.epoch_lr = self.opt.param_groups[0]["lr"]
        self.sched.step()

    def evaluate_and_select(self, val: Split, epoch: int, train_loss: float, batch_size: int,
                            scores: np.ndarray | None = None) -> dict:
        """Score the validation split (or take its ``scores``, from a pack); keep this epoch's weights as
        best.pt if the profile's rule selects it."""
        if scores is None:
            scores = predict(self.model, val, self.dev, batch_size, self.profile.normalization)
        val_auroc = _auroc(np.asarray(val.labels), scores)
        acc = accuracy(np.asarray(val.labels), scores)
        # AUROC: strict, ties keep the earlier checkpoint; accuracy: >=, later ties win (released code).
        if (acc >= self.best_val) if self.by_accuracy else (val_auroc > self.best_val):
            self.best_val, self.best_epoch = (acc if self.by_accuracy else val_auroc), epoch + 1
            runs.save_checkpoint(self.model.state_dict(), self.dir / runs.BEST)
        stats = {"epoch": epoch + 1, "train_loss": train_loss, "val_auroc": val_auroc, "val_accuracy": acc,
                 "lr": self.epoch_lr}  # the rate this epoch trained at (the schedule has stepped since)
        self.history.append(stats)
        return stats

    def save_last(self) -> None:
        runs.save_checkpoint({"epoch": len(self.history), "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                              "sched": self.sched.state_dict(), "rng": torch.get_rng_state(),
                              "cuda_rng": torch.cuda.get_rng_state() if self.cuda else None,
                              "best_val": self.best_val, "best_epoch": self.best_epoch, "history": self.history,
                              "config": self.cfg.to_dict()}, self.dir / runs.LAST)

    def status(self, stats: dict) -> str:
        if self.by_accuracy:
            return (f"loss {stats['train_loss']:.3f} val {stats['val_auroc']:.3f} acc {stats['val_accuracy']:.1f}% "
                    f"best acc {self.best_val:.1f}%")
        return f"loss {stats['train_loss']:.3f} val {stats['val_auroc']:.3f} best {self.best_val:.3f}"

    def load_best(self) -> None:
        self.model.load_state_dict(torch.load(self.dir / runs.BEST, map_location=self.dev, weights_only=True))

    def finish(self, data: Bundle, batch_size: int, started: float,
               scores: dict[str, np.ndarray] | None = None, bar=None) -> TrainResult:
        """Test the selected checkpoint on every domain (or take its ``scores``, from a pack); store its
        scores and the result (the "done" marker)."""
        domains = {data.source: data.test, **data.targets}
        chosen_val = selection_splits(data, self.cfg.mask)
        if scores is None:
            self.load_best()
            scores = score(self.model, {**domains, **chosen_val}, self.dev, batch_size, self.profile.normalization,
                           bar)
        # The selected checkpoint's scores stay in the run folder (ROC curves, paired tests); never uploaded.
        labels = {name: np.asarray(split.labels) for name, split in domains.items()}
        runs.save_scores(self.dir / runs.SCORES, {name: (labels[name], scores[name]) for name in domains})
        save_groups(self.dir, domains)
        chosen = self.history[self.best_epoch - 1] if 0 < self.best_epoch <= len(self.history) else {}
        result = TrainResult(
            val_auroc=float(chosen.get("val_auroc", self.best_val)),
            best_epoch=self.best_epoch,
            auroc={name: _auroc(labels[name], scores[name]) for name in domains},
            history=self.history,
            resumed_from=self.start,
            wall_s=time.perf_counter() - started,
            val_accuracy=float(chosen.get("val_accuracy", math.nan)),
            selection=self.profile.select,
            **_selection_numbers(chosen_val, scores),
        )
        # The sizes and hashes of the files written above: a later read trusts the folder only if they match.
        stored = {**dataclasses.asdict(result), "files": runs.seal(self.dir)}
        runs.atomic_write_text(self.dir / runs.RESULT, json.dumps(stored, indent=1))
        return result


def _selection_numbers(splits: dict[str, Split], scores: dict[str, np.ndarray]) -> dict[str, float]:
    """The selected checkpoint's numbers the grid-point rules read (dgx/selection.py)."""
    from dgx.stats import delong_ci

    out = {}
    val = np.asarray(splits[VAL].labels)
    if len(np.unique(val)) == 2:
        out["val_auroc_low"] = delong_ci(val, scores[VAL])[1]
    for name, key in ((VAL_SHUFFLED, "val_shuffled_auroc"), (VAL_SWAPPED, "val_swapped_auroc")):
        if name in splits:
            out[key] = _auroc(np.asarray(splits[name].labels), scores[name])
    return out


def epoch_losses(run, split: Split, epoch: int, steps: int, advance: Callable[[], None]) -> torch.Tensor:
    """One pass of ``run`` (a _Run, or a pack of them) over the training split: the mean training loss,
    () or, for a pack, one per member (K,)."""
    cfg = run.cfg
    run.model.train()
    loss_sum = torch.zeros((), device=run.dev)
    # drop_last: a trailing batch of one breaks train-mode batch norm.
    seed = cfg.seed * 100_003 + epoch
    resident = run.resident(split)
    stream = (resident.batches(cfg.batch_size, shuffle=True, seed=seed, drop_last=True) if resident is not None
              else batches(split, cfg.batch_size, cfg.mask, shuffle=True, seed=seed, drop_last=True,
                           negatives=cfg.negative_masks))
    for images, labels, masks in stream:
        x = run.normalize(images.to(run.dev, non_blocking=True))
        if run.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with run.amp:
            parts = run.method.loss(run.model, x, labels.to(run.dev), masks.to(run.dev).float())
        run.opt.zero_grad(set_to_none=True)
        loss = parts["loss"]
        (loss.sum() if loss.dim() else loss).backward()  # a pack's members' losses are independent: Σ_k
        run.opt.step()
        loss_sum = loss_sum + loss.detach()
        advance()
    return loss_sum.cpu().double() / max(steps, 1)


def check_finite(train_loss: float, epoch: int) -> None:
    if not math.isfinite(train_loss):
        raise NonFiniteLossError(f"non-finite training loss ({train_loss}) in epoch {epoch + 1}; lower --lr or --lam")


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 128,
            normalization: str = "imagenet", advance: Callable[[int], None] | None = None) -> np.ndarray:
    """P(pneumothorax) for every image of ``split``, in order: (N,), or (N, K) for a packed model.
    ``advance(n)`` after each batch of n images (a progress bar)."""
    model.eval()
    cuda = device.type == "cuda"
    out = []
    normalize = InputNormalizer(normalization)
    for images, _, _ in batches(split, batch_size):
        x = normalize(images.to(device))
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            logits = model(x.contiguous(memory_format=torch.channels_last) if cuda else x)
        out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
        if advance is not None:
            advance(len(images))
    return torch.cat(out).numpy()


def score(model: torch.nn.Module, splits: dict[str, Split], device: torch.device, batch_size: int,
          normalization: str, bar=None) -> dict[str, np.ndarray]:
    """:func:`predict` on each split, as one progress task over all their images (tens of thousands on real
    targets: minutes without a word otherwise)."""
    total = sum(len(split.labels) for split in splits.values())
    task = None if bar is None else bar.add_task(f"scoring {total} images ({len(splits)} splits)", total=total,
                                                 status="")
    try:
        return {name: predict(model, split, device, batch_size, normalization,
                              None if task is None else lambda n: bar.advance(task, n))
                for name, split in splits.items()}
    finally:
        if task is not None:
            bar.remove_task(task)


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of images whose argmax class is the label (P(pneumothorax) > 0.5), in percent as released."""
    return float(100.0 * np.mean((np.asarray(scores) > 0.5) == (np.asarray(labels) == 1)))


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float("nan") if len(np.unique(labels)) < 2 else float(roc_auc_score(labels, scores))


def _progress(progress) -> tuple[object, bool]:
    """(bar, whether this call owns it): a caller's bar (a sweep's) is shared, else a new one."""
    if not isinstance(progress, bool):
        return progress, False
    bar = make_progress()
    bar.disable = bar.disable or not progress
    bar.start()
    return bar, True
