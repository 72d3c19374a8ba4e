"""The training loop: one path for one training or a pack of K, read top to bottom.

Adam + cosine schedule; model selection on **source validation** only: AUROC
(``paper`` profile) or, as the released code did, accuracy with later ties
winning (``official``); targets are evaluated once, on the selected checkpoint,
and never used to choose anything. The profile (dgx/profiles.py) also decides
the source split, the masks' geometry, the input normalization and the methods'
switches. Every epoch is checkpointed, so an interrupted run resumes
where it stopped and finishes with exactly the metrics of an uninterrupted one
(on CPU). A run folder is named by the hash of its config (DomainBed's idea),
so rerunning a finished config returns its stored result at once.

Trainings that differ only in learning rate and weight decay can train as one
pack (dgx/pack.py): one wide network over one batch stream. Each member (a
:class:`_Run`: its own run folder, model, optimizer, schedule and selection)
checkpoints, selects and finishes exactly as alone; one training is a pack of one
whose "wide network" is its own model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from dgx import runs
from dgx.data.base import Bundle, Split
from dgx.data.loader import Resident, batches, num_batches
from dgx.data.released import for_profile
from dgx.errors import DgxError
from dgx.methods import method_class
from dgx.models import InputNormalizer, build_model
from dgx.pack import PackedAdam, check_packable, load_members, pack_models
from dgx.profiles import get_profile
from dgx.progress import make_progress
from dgx.runs import TrainResult
from dgx.scoring import accuracy, auroc, autocast, predict, score, selection_numbers, selection_splits
from dgx.spec import TrainConfig
from dgx.stored import device_of, save_groups, stored_result
from dgx.threads import training_share

log = logging.getLogger("dgx")

RESIDENT_SHARE = 0.25  # the training split moves to the GPU when it takes at most this share of free memory


class NonFiniteLossError(RuntimeError):
    """Training diverged; the run cannot continue (sweeps record it and move on)."""


def train(cfg: TrainConfig, data: Bundle, run_dir: Path, *, device: str = "auto",
          on_epoch: Callable[[int, dict], None] | None = None, progress: object = True,
          eval_batch_size: int = 128) -> TrainResult:
    """Train ``cfg`` on ``data``'s source, select on its val split, test on all domains: :func:`train_runs`
    for one config, raising what stopped it. ``on_epoch(epoch, stats)`` as there."""
    (outcome,) = train_runs([cfg], data, [run_dir], device=device, progress=progress, eval_batch_size=eval_batch_size,
                            on_epoch=None if on_epoch is None else lambda _, epoch, stats: on_epoch(epoch, stats))
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def train_runs(cfgs: Sequence[TrainConfig], data: Bundle, run_dirs: Sequence[Path], *, device: str = "auto",
               on_epoch: Callable[[int, int, dict], None] | None = None, progress: object = True,
               eval_batch_size: int = 128) -> list[TrainResult | Exception]:
    """Train ``cfgs`` (one, or several that differ only in learning rate and weight decay, as one pack) on
    ``data``; each config's TrainResult, or the exception that stopped it.

    Each config keeps its own run folder, written the same way whether it trained alone or packed (so a
    pack resumes alone or packed, and a finished folder serves either); a packed result equals the one
    trained alone within float tolerance. ``on_epoch(i, epoch, stats)`` is called for ``cfgs[i]`` after its
    epoch's checkpoint is saved; an exception it raises (e.g. a pruned trial) stops that config only, as
    does a non-finite loss. Configs resumed at different epochs train as separate packs. ``progress``: True,
    False, or a caller's progress bar to add the tasks to.
    """
    outcomes: list = [stored_result(Path(d), data, c, device) for c, d in zip(cfgs, run_dirs)]
    todo = [i for i, o in enumerate(outcomes) if o is None]
    if not todo:
        return outcomes
    started = time.perf_counter()
    profile = get_profile(cfgs[todo[0]].profile)
    if len(todo) > 1:
        check_packable([cfgs[i] for i in todo], profile)
    cfg = cfgs[todo[0]]
    data = for_profile(data, profile, cfg.seed, cfg.mask)
    steps = _steps(cfg, data, profile)
    dev = device_of(device)
    members = {i: _Run(cfgs[i], profile, dev, Path(run_dirs[i])) for i in todo}
    with training_share() as share:  # this process's fair share of the machine's cores (dgx/threads.py)
        bar, own_bar = _progress(progress)
        try:
            for start in sorted({m.start for m in members.values()}):
                group = {i: m for i, m in members.items() if m.start == start}
                for i, outcome in _Trainer(group, bar, steps, share).train(data, on_epoch, eval_batch_size,
                                                                         started).items():
                    outcomes[i] = outcome
        finally:
            if own_bar:
                bar.stop()
    return outcomes


class _Trainer:
    """Members trained over one batch stream: a lone member through its own model and optimizer, several as
    one wide network (dgx/pack.py) with a learning rate and weight decay per member.

    After every epoch the pack's weights and optimizer state are copied back into the members, which then
    step their own schedules, select and checkpoint exactly as alone; a member that stops (pruned, or a
    non-finite loss) leaves the pack, which is rebuilt from the members that remain.
    """

    def __init__(self, members: dict[int, _Run], bar, steps: int, share) -> None:
        self.members, self.bar, self.steps, self.share = dict(members), bar, steps, share
        self._build()

    def _build(self) -> None:
        """The model and optimizer the epochs step: the member's own when alone, else a wide copy of all."""
        runs_ = list(self.members.values())
        # What the members share (data, seed, mask, method, λ, profile, device, epochs): the first one's.
        self.lead, self.packed = runs_[0], len(runs_) > 1
        if not self.packed:
            self.model, self.opt = runs_[0].model, runs_[0].opt
            return
        self.model = pack_models([m.model for m in runs_]).to(self.lead.dev)
        if self.lead.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = PackedAdam(list(self.model.parameters()), len(runs_), betas=runs_[0].opt.defaults["betas"],
                              eps=runs_[0].opt.defaults["eps"])
        self.opt.load_members([m.opt.state_dict() for m in runs_])
        self.opt.wd = torch.tensor([m.cfg.wd for m in runs_], dtype=torch.float64)
        self._rates()

    def _rates(self) -> None:
        if self.packed:  # a lone member's schedule sets its own optimizer's rate
            self.opt.lr = torch.tensor([m.opt.param_groups[0]["lr"] for m in self.members.values()],
                                       dtype=torch.float64)

    def _sync(self) -> None:
        """The pack's weights and Adam state into each member's own model and optimizer."""
        if self.packed:
            runs_ = list(self.members.values())
            load_members(self.model, [m.model for m in runs_])
            for k, m in enumerate(runs_):
                m.opt.load_state_dict(self.opt.member_state(k, m.opt))

    def label(self) -> str:
        if not self.packed:
            return self.lead.cfg.label()
        cfg = self.lead.cfg
        return f"{cfg.method}/{cfg.mask} λ={cfg.lam:g} seed {cfg.seed} ×{len(self.members)} packed (lr, wd)"

    def train(self, data: Bundle, on_epoch, eval_batch_size: int, started: float) -> dict[int, TrainResult | Exception]:
        out: dict[int, TrainResult | Exception] = {}
        start, epochs = self.lead.start, self.lead.epochs
        task = self.bar.add_task(self.label(), total=epochs * self.steps, completed=start * self.steps, status="")
        try:
            for epoch in range(start, epochs):
                self.share.apply()  # other trainings on this machine may have started or stopped
                losses = epoch_losses(self, data.train, epoch, self.steps, lambda: self.bar.advance(task))
                self._sync()
                scores = _columns(predict(self.model, data.val, self.lead.dev, self.lead.profile, eval_batch_size))
                stopped, status = [], ""
                for k, (i, member) in enumerate(self.members.items()):
                    try:
                        status = member.end_epoch(data.val, epoch, float(losses[k]), scores[:, k])
                        if on_epoch is not None:
                            on_epoch(i, epoch + 1, member.history[-1])
                    except Exception as exc:  # noqa: BLE001 - this member stops; the others go on
                        out[i] = exc
                        stopped.append(i)
                self.bar.update(task, status=status if len(self.members) == 1 else
                                f"{len(self.members) - len(stopped)} training")
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
        """Each member's selected checkpoint, scored on every domain in one (packed) pass per domain."""
        runs_ = list(self.members.values())
        for m in runs_:
            m.load_best()
        scorer = runs_[0].model if len(runs_) == 1 else pack_models([m.model for m in runs_]).to(self.lead.dev)
        if self.lead.cuda:
            scorer = scorer.to(memory_format=torch.channels_last)
        chosen_val = selection_splits(data, self.lead.cfg.mask)  # built once: the copies are whole images
        domains = {data.source: data.test, **data.targets, **chosen_val}
        scores = {name: _columns(s) for name, s in
                  score(scorer, domains, self.lead.dev, self.lead.profile, batch_size, self.bar).items()}
        return {i: m.finish(data, started, {name: s[:, k] for name, s in scores.items()}, chosen_val)
                for k, (i, m) in enumerate(self.members.items())}


def _columns(scores: np.ndarray) -> np.ndarray:
    """Scores as (N, K): one column per member."""
    return scores[:, None] if scores.ndim == 1 else scores


def _steps(cfg: TrainConfig, data: Bundle, profile) -> int:
    """Optimizer steps per epoch; checked before any model is built: an "empty" run must never be stored."""
    steps = num_batches(data.train, cfg.batch_size, drop_last=profile.last_batch == "drop")
    if steps == 0:
        raise DgxError(f"batch size {cfg.batch_size} is larger than the {len(data.train)} training images of "
                       f"{data.source}: no optimizer step would run; lower --batch-size or use more training images")
    return steps


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
        self.amp = autocast(dev, profile)  # bf16 on CUDA, unless the profile trains in fp32 as released
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

    def end_epoch(self, val: Split, epoch: int, train_loss: float, scores: np.ndarray) -> str:
        """The epoch is trained (the pack's weights are this member's): check its loss, step the schedule,
        select on the validation ``scores``, checkpoint; the progress status (raises if the loss is not finite)."""
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(f"non-finite training loss ({train_loss}) in epoch {epoch + 1}; "
                                     "lower --lr or --lam")
        epoch_lr = self.opt.param_groups[0]["lr"]  # the rate this epoch trained at, for its stats
        self.opt.zero_grad(set_to_none=True)
        self.opt.step()  # no gradients: a no-op that lets the schedule step without a warning in a pack
        self.sched.step()
        labels = np.asarray(val.labels)
        val_auroc, acc = auroc(labels, scores), accuracy(labels, scores)
        # AUROC: strict, ties keep the earlier checkpoint; accuracy: >=, later ties win (released code).
        if (acc >= self.best_val) if self.by_accuracy else (val_auroc > self.best_val):
            self.best_val, self.best_epoch = (acc if self.by_accuracy else val_auroc), epoch + 1
            runs.save_checkpoint(self.model.state_dict(), self.dir / runs.BEST)
        self.history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_auroc": val_auroc,
                             "val_accuracy": acc, "lr": epoch_lr})
        self.save_last()
        if self.by_accuracy:
            return f"loss {train_loss:.3f} val {val_auroc:.3f} acc {acc:.1f}% best acc {self.best_val:.1f}%"
        return f"loss {train_loss:.3f} val {val_auroc:.3f} best {self.best_val:.3f}"

    def save_last(self) -> None:
        runs.save_checkpoint({"epoch": len(self.history), "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                              "sched": self.sched.state_dict(), "rng": torch.get_rng_state(),
                              "cuda_rng": torch.cuda.get_rng_state() if self.cuda else None,
                              "best_val": self.best_val, "best_epoch": self.best_epoch, "history": self.history,
                              "config": self.cfg.to_dict()}, self.dir / runs.LAST)

    def load_best(self) -> None:
        self.model.load_state_dict(torch.load(self.dir / runs.BEST, map_location=self.dev, weights_only=True))

    def finish(self, data: Bundle, started: float, scores: dict[str, np.ndarray],
               chosen_val: dict[str, Split]) -> TrainResult:
        """Store the selected checkpoint's ``scores`` on every domain and the result (the "done" marker)."""
        domains = {data.source: data.test, **data.targets}
        # The selected checkpoint's scores stay in the run folder (ROC curves, paired tests); never uploaded.
        labels = {name: np.asarray(split.labels) for name, split in domains.items()}
        runs.save_scores(self.dir / runs.SCORES, {name: (labels[name], scores[name]) for name in domains})
        save_groups(self.dir, domains)
        chosen = self.history[self.best_epoch - 1] if 0 < self.best_epoch <= len(self.history) else {}
        result = TrainResult(
            val_auroc=float(chosen.get("val_auroc", self.best_val)),
            best_epoch=self.best_epoch,
            auroc={name: auroc(labels[name], scores[name]) for name in domains},
            history=self.history,
            resumed_from=self.start,
            wall_s=time.perf_counter() - started,
            val_accuracy=float(chosen.get("val_accuracy", math.nan)),
            selection=self.profile.select,
            **selection_numbers(chosen_val, scores),
        )
        # The sizes and hashes of the files written above: a later read trusts the folder only if they match.
        stored = {**dataclasses.asdict(result), "files": runs.seal(self.dir)}
        runs.atomic_write_text(self.dir / runs.RESULT, json.dumps(stored, indent=1))
        return result


def epoch_losses(trainer: _Trainer, split: Split, epoch: int, steps: int, advance: Callable[[], None]) -> torch.Tensor:
    """One pass of ``trainer``'s model (a member's own, or the pack's) over the training split, stepping its
    optimizer: the mean training loss of each member, (K,)."""
    run, model, opt = trainer.lead, trainer.model, trainer.opt  # the members share all but model and optimizer
    cfg = run.cfg
    model.train()
    loss_sum = torch.zeros((), device=run.dev)
    # paper: the last partial batch is dropped (a trailing batch of one breaks train-mode batch norm); the
    # official profile keeps it, as the released DataLoader did.
    seed, drop = cfg.seed * 100_003 + epoch, run.profile.last_batch == "drop"
    resident = run.resident(split)
    stream = (resident.batches(cfg.batch_size, shuffle=True, seed=seed, drop_last=drop) if resident is not None
              else batches(split, cfg.batch_size, cfg.mask, shuffle=True, seed=seed, drop_last=drop,
                           negatives=cfg.negative_masks))
    for images, labels, masks in stream:
        x = run.normalize(images.to(run.dev, non_blocking=True))
        if run.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with run.amp:
            parts = run.method.loss(model, x, labels.to(run.dev), masks.to(run.dev).float())
        opt.zero_grad(set_to_none=True)
        loss = parts["loss"]
        (loss.sum() if loss.dim() else loss).backward()  # a pack's members' losses are independent: Σ_k
        opt.step()
        loss_sum = loss_sum + loss.detach()
        advance()
    return (loss_sum.cpu().double() / max(steps, 1)).reshape(-1)


def _progress(progress) -> tuple[object, bool]:
    """(bar, whether this call owns it): a caller's bar (a sweep's) is shared, else a new one."""
    if not isinstance(progress, bool):
        return progress, False
    bar = make_progress()
    bar.disable = bar.disable or not progress
    bar.start()
    return bar, True


__all__ = ["train", "train_runs", "NonFiniteLossError", "epoch_losses", "RESIDENT_SHARE"]
