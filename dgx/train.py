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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from sklearn.metrics import roc_auc_score

from dgx.data.base import Bundle, Split
from dgx.data.loader import batches, num_batches
from dgx.data.profile import for_profile
from dgx.methods import build_method
from dgx.models import InputNormalizer, build_model
from dgx.profiles import get_profile
from dgx.progress import make_progress

log = logging.getLogger("dgx")

PAPER_EPOCHS = {"erm": 15}  # §4: ERM 15 epochs (Saab et al.), all other methods 100 (Viviano et al.)
DEFAULT_EPOCHS = 100


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
        return self.epochs or PAPER_EPOCHS.get(self.method, DEFAULT_EPOCHS)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["data_options"] = dict(self.data_options)
        d["epochs"] = self.num_epochs
        return d

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


class NonFiniteLossError(RuntimeError):
    """Training diverged; the run cannot continue (sweeps record it and move on)."""


def train(
    cfg: TrainConfig,
    data: Bundle,
    run_dir: Path,
    *,
    device: str = "auto",
    on_epoch: Callable[[int, dict], None] | None = None,
    progress: Progress | bool = True,
    eval_batch_size: int = 128,
) -> TrainResult:
    """Train ``cfg`` on ``data``'s source, select on its val split, test on all domains.

    ``on_epoch(epoch, stats)`` is called after each epoch's checkpoint is saved
    (for tracking and pruning; it may raise to stop the run).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = run_dir / "result.json"
    if done.exists():
        return TrainResult(**json.loads(done.read_text()))
    started = time.perf_counter()
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    cuda = dev.type == "cuda"
    epochs = cfg.num_epochs

    profile = get_profile(cfg.profile)
    data = for_profile(data, profile, cfg.seed, cfg.mask)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.weights).to(dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    # The released periphery path reseeded its shuffle with the run's seed on every call.
    fixed_shuffle = cfg.seed if profile.shuffle == "released" and cfg.mask == "periphery" else None
    method = build_method(cfg.method, cfg.lam, cfg.actdiff_layers, profile=profile, shuffle_seed=fixed_shuffle)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    start, best_val, best_epoch, history = 0, -math.inf, 0, []
    by_accuracy = profile.select == "accuracy"
    last = run_dir / "last.pt"
    if last.exists():  # resume: restore everything that influences what comes next
        ck = torch.load(last, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        torch.set_rng_state(ck["rng"])
        if cuda and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"])
        start, best_val, best_epoch, history = ck["epoch"], ck["best_val"], ck["best_epoch"], ck["history"]
        log.info("resuming %s from epoch %d/%d", run_dir.name, start, epochs)

    steps = num_batches(data.train, cfg.batch_size, drop_last=True)
    bar, own_bar = _progress(progress)
    task = bar.add_task(f"{cfg.method}/{cfg.mask} seed {cfg.seed}", total=epochs * steps, completed=start * steps, status="")
    normalize = InputNormalizer(profile.normalization)  # reused input buffers on CPU (see dgx.models)
    try:
        for epoch in range(start, epochs):
            model.train()
            loss_sum = torch.zeros((), device=dev)
            # drop_last: a trailing batch of one breaks train-mode batch norm.
            for images, labels, masks in batches(data.train, cfg.batch_size, cfg.mask, shuffle=True,
                                                 seed=cfg.seed * 100_003 + epoch, drop_last=True,
                                                 negatives=cfg.negative_masks):
                x = normalize(images.to(dev, non_blocking=True))
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with amp:
                    parts = method.loss(model, x, labels.to(dev), masks.to(dev).float())
                opt.zero_grad(set_to_none=True)
                parts["loss"].backward()
                opt.step()
                loss_sum += parts["loss"].detach()
                bar.advance(task)
            train_loss = loss_sum.item() / max(steps, 1)
            if not math.isfinite(train_loss):
                raise NonFiniteLossError(f"non-finite training loss ({train_loss}) in epoch {epoch + 1}; lower --lr or --lam")
            sched.step()
            val_scores = predict(model, data.val, dev, eval_batch_size, profile.normalization)
            val = _auroc(np.asarray(data.val.labels), val_scores)
            acc = accuracy(np.asarray(data.val.labels), val_scores)
            # AUROC: strict, ties keep the earlier checkpoint; accuracy: >=, later ties win (released code).
            if (acc >= best_val) if by_accuracy else (val > best_val):
                best_val, best_epoch = (acc if by_accuracy else val), epoch + 1
                _atomic_save(model.state_dict(), run_dir / "best.pt")
            history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_auroc": val, "val_accuracy": acc,
                            "lr": opt.param_groups[0]["lr"]})
            _atomic_save({"epoch": epoch + 1, "model": model.state_dict(), "opt": opt.state_dict(),
                          "sched": sched.state_dict(), "rng": torch.get_rng_state(),
                          "cuda_rng": torch.cuda.get_rng_state() if cuda else None,
                          "best_val": best_val, "best_epoch": best_epoch, "history": history,
                          "config": cfg.to_dict()}, last)
            bar.update(task, status=f"loss {train_loss:.3f} val {val:.3f} acc {acc:.1f}% best acc {best_val:.1f}%"
                       if by_accuracy else f"loss {train_loss:.3f} val {val:.3f} best {best_val:.3f}")
            if on_epoch is not None:
                on_epoch(epoch + 1, history[-1])
    finally:
        if own_bar:
            bar.stop()
        else:
            bar.remove_task(task)

    model.load_state_dict(torch.load(run_dir / "best.pt", map_location=dev, weights_only=True))
    domains = {data.source: data.test, **data.targets}
    scores = {name: predict(model, split, dev, eval_batch_size, profile.normalization)
              for name, split in domains.items()}
    chosen = history[best_epoch - 1] if 0 < best_epoch <= len(history) else {}
    # The selected checkpoint's scores stay in the run folder (ROC curves, paired tests); never uploaded.
    save_scores(run_dir / SCORES_FILE, {name: (np.asarray(split.labels), scores[name]) for name, split in domains.items()})
    result = TrainResult(
        val_auroc=float(chosen.get("val_auroc", best_val)),
        best_epoch=best_epoch,
        auroc={name: _auroc(np.asarray(split.labels), scores[name]) for name, split in domains.items()},
        history=history,
        resumed_from=start,
        wall_s=time.perf_counter() - started,
        val_accuracy=float(chosen.get("val_accuracy", math.nan)),
        selection=profile.select,
    )
    _atomic_write_text(done, json.dumps(dataclasses.asdict(result), indent=1))
    return result


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 128,
            normalization: str = "imagenet") -> np.ndarray:
    """P(pneumothorax) for every image of ``split``, in order."""
    model.eval()
    cuda = device.type == "cuda"
    out = []
    normalize = InputNormalizer(normalization)
    for images, _, _ in batches(split, batch_size):
        x = normalize(images.to(device))
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            logits = model(x.contiguous(memory_format=torch.channels_last) if cuda else x)
        out.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(out).numpy()


def auroc(model: torch.nn.Module, split: Split, device: torch.device, batch_size: int = 128,
          normalization: str = "imagenet") -> float:
    """AUROC (scikit-learn) of the model on a split; NaN if the split has one class."""
    if len(np.unique(split.labels)) < 2:
        return float("nan")
    return _auroc(np.asarray(split.labels), predict(model, split, device, batch_size, normalization))


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of images whose argmax class is the label (P(pneumothorax) > 0.5), in percent as released."""
    return float(100.0 * np.mean((np.asarray(scores) > 0.5) == (np.asarray(labels) == 1)))


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float("nan") if len(np.unique(labels)) < 2 else float(roc_auc_score(labels, scores))


SCORES_FILE = "scores.npz"


def save_scores(path: Path, per_domain: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Labels and P(pneumothorax) of the selected checkpoint per domain, written atomically."""
    arrays = {}
    for name, (labels, scores) in per_domain.items():
        arrays[f"{name}.labels"] = np.asarray(labels, dtype=np.int8)
        arrays[f"{name}.scores"] = np.asarray(scores, dtype=np.float32)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_scores(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Inverse of :func:`save_scores` ({} when the run predates score files)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with np.load(path) as z:
        names = sorted({k.rsplit(".", 1)[0] for k in z.files})
        return {n: (z[f"{n}.labels"], z[f"{n}.scores"]) for n in names}


def _progress(progress: Progress | bool) -> tuple[Progress, bool]:
    if isinstance(progress, Progress):
        return progress, False
    bar = make_progress()
    bar.disable = not progress
    bar.start()
    return bar, True


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
