"""One home for runs: the run-folder layout, the files in it, the trial record, and atomic writes.

A run folder is named by the hash of its config and data (``TrainConfig.run_id``)::

    <runs_dir>/runs/<run_id>/
        last.pt       checkpoint of the last finished epoch (model, optimizer, schedule, RNG, history)
        best.pt       state dict of the selected checkpoint
        scores.npz    labels and P(pneumothorax) of the selected checkpoint per domain (never uploaded)
        groups.npz    per-image subgroup keys of the scored splits, in score order (never uploaded)
        result.json   the TrainResult and the size and sha256 of the files above; its presence means "done"

A folder whose files no longer match (a truncated or overwritten file) is
moved to ``<runs_dir>/quarantine/`` and trained again (:func:`verify`,
:func:`quarantine`); ``dgx doctor`` finds them without training.

A trial's record (:class:`TrialRecord`) is what the report reads back: the
Optuna trial's user attrs (the database of record) or a W&B run's config and
summary (the view); one dataclass serves both directions.

Every file dgx writes goes through :func:`atomic_write`: a temporary file in
the same folder, renamed over the target only once complete, so a crash or a
full disk never leaves a half-written file under the final name. The temporary
file is created like any other (``open``), so the result takes the usual
permissions (``0666 & ~umask``, 0644 under umask 022), not the 0600 of a secure temporary-file API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dgx.errors import DgxError

RUNS = "runs"  # run folders live under <runs_dir>/runs/
STORAGES = "storages.txt"  # <runs_dir>/storages.txt: each Optuna storage whose trials name run folders here
# A study name's "-o" + six hex digits: settings a flag changed from the budget's (dgx.sweep.plan.study_name).
OVERRIDDEN = re.compile(r"-o[0-9a-f]{6}(?=$|[-.])")
RESULT, LAST, BEST, SCORES = "result.json", "last.pt", "best.pt", "scores.npz"
GROUPS = "groups.npz"  # per-image subgroup keys of the scored domains (dgx report --by); stays local


def run_dir(runs_dir: Path | str, run_id: str) -> Path:
    """The folder of run ``run_id`` under ``runs_dir`` (DGX_RUNS_DIR)."""
    return Path(runs_dir) / RUNS / run_id


# ---------------------------------------------------------------- atomic writes

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it, and it replaces ``path`` when the block ends.

    On an exception the temporary file is removed and ``path`` is untouched. The
    temporary name keeps ``path``'s suffix, so writers that choose a format by
    suffix (matplotlib, ``np.savez``) write the right one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_folder(path: Path | str) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` (with umask permissions) when the block ends.

    If ``path`` exists by then (a concurrent builder finished first), the new folder is discarded.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir(mode=0o777)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------- integrity: seal, verify, quarantine

QUARANTINE = "quarantine"  # damaged run folders are moved to <runs_dir>/quarantine/<run_id>-<UTC time>/
SEALED = (BEST, SCORES, GROUPS)  # the finished run's files whose size and sha256 result.json records
REQUIRED_RESULT = ("val_auroc", "best_epoch", "auroc")  # a stored result without these is damaged


def digest(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file (what result.json records to detect damage later)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": Path(path).stat().st_size, "sha256": h.hexdigest()}


def seal(folder: Path) -> dict[str, dict[str, Any]]:
    """The digests of a finished run's files, for result.json's ``files``."""
    return {name: digest(Path(folder) / name) for name in SEALED if (Path(folder) / name).is_file()}


def verify(folder: Path, required: tuple[str, ...] = REQUIRED_RESULT) -> tuple[dict | None, list[str]]:
    """A finished run's stored result and what is wrong with the folder ([] when it can be trusted).

    The result must parse as a JSON object holding every ``required`` field;
    each file it sealed must still have its recorded size and sha256. A result
    from before sealing is trusted when its ``scores.npz`` still loads.
    """
    folder = Path(folder)
    try:
        stored = json.loads((folder / RESULT).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, [f"{RESULT} is unreadable ({type(exc).__name__})"]
    if not isinstance(stored, dict):
        return None, [f"{RESULT} is not a JSON object"]
    problems = [f"{RESULT} lacks {k!r}" for k in required if k not in stored]
    files = stored.get("files")
    if isinstance(files, dict):
        for name, want in files.items():
            path = folder / name
            if not path.is_file():
                problems.append(f"{name} is missing")
            elif not isinstance(want, dict) or digest(path) != {"size": want.get("size"), "sha256": want.get("sha256")}:
                problems.append(f"{name} does not match the size and sha256 in {RESULT}")
    elif (folder / SCORES).is_file():
        try:
            load_scores(folder / SCORES)
        except Exception as exc:  # noqa: BLE001 - any failure to read means damage
            problems.append(f"{SCORES} is unreadable ({type(exc).__name__})")
    return (stored if not problems else None), problems


def quarantine(folder: Path, reason: str) -> Path:
    """Move a damaged run folder aside (never delete it) and say so in one warning line."""
    folder = Path(folder)
    target = folder.parent.parent / QUARANTINE / f"{folder.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    target.parent.mkdir(parents=True, exist_ok=True)
    while target.exists():
        target = target.with_name(target.name + "x")
    os.replace(folder, target)
    if reason == "orphaned":  # dgx doctor --fix: no storage names it; nothing will train it again
        logging.getLogger("dgx").warning("run %s is named by no known storage; moved it to %s", folder.name, target)
    else:
        logging.getLogger("dgx").warning("run %s is damaged (%s); moved it to %s and training it again",
                                         folder.name, reason, target)
    return target


def save_checkpoint(obj: object, path: Path) -> None:
    import torch  # torch: only to write a checkpoint (reports read run folders without it)

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


# ---------------------------------------------------------------- scores

def save_scores(path: Path, per_domain: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Labels and P(pneumothorax) of the selected checkpoint per domain, written atomically."""
    arrays = {}
    for name, (labels, scores) in per_domain.items():
        arrays[f"{name}.labels"] = np.asarray(labels, dtype=np.int8)
        arrays[f"{name}.scores"] = np.asarray(scores, dtype=np.float32)
    with atomic_write(path) as tmp:
        np.savez(tmp, **arrays)


def load_scores(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Inverse of :func:`save_scores` ({} when the run predates score files); plain arrays only, no pickles.

    A damaged file is a one-line DgxError that says how to recover.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            names = sorted({k.rsplit(".", 1)[0] for k in z.files})
            return {n: (z[f"{n}.labels"], z[f"{n}.scores"]) for n in names}
    except Exception as exc:  # noqa: BLE001 - zip, pickle, key and OS errors all mean a file dgx cannot trust
        raise _damaged(path, exc) from None


def _damaged(path: Path, exc: Exception):
    return DgxError(f"{path} is damaged ({type(exc).__name__}); run `dgx doctor --fix` to quarantine that run, "
                    "then rerun its sweep to train it again")


def save_groups(path: Path, per_domain: dict[str, dict[str, np.ndarray]]) -> None:
    """Per-image subgroup labels ({domain: {key: str (N,)}}) in score order, written atomically."""
    arrays = {f"{name}.{key}": np.asarray(values, dtype=str)
              for name, keys in per_domain.items() for key, values in keys.items()}
    with atomic_write(path) as tmp:
        np.savez(tmp, **arrays)


def load_groups(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`save_groups` ({} when the run has none); unicode arrays only, no pickles."""
    path = Path(path)
    if not path.is_file():
        return {}
    out: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            for name in z.files:
                domain, key = name.rsplit(".", 1)
                out.setdefault(domain, {})[key] = z[name]
    except Exception as exc:  # noqa: BLE001 - as load_scores
        raise _damaged(path, exc) from None
    return out


def scores_path(runs_dir: Path | str, run_id: str) -> Path:
    return run_dir(runs_dir, run_id) / SCORES


# ---------------------------------------------------------------- a training's result (result.json)

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


RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(TrainResult))
SELECTION_FIELDS = ("val_auroc_low", "val_shuffled_auroc", "val_swapped_auroc")  # what dgx/selection.py reads


# ---------------------------------------------------------------- the trial record

@dataclass
class TrialRecord:
    """What a finished training contributes to the report, as stored on its Optuna trial.

    ``to_attrs`` gives the trial's user attrs; ``from_attrs`` reads them back (and
    ``from_wandb`` the same fields from a W&B run's config and summary). Only the
    training config, scalars and per-domain AUROCs: no image, image ID or patient ID.
    """

    method: str
    mask: str
    dataset: str
    source: str  # the source domain's name
    targets: list[str]  # target domain names, in display order
    phase: str  # search | seeds
    seed: int
    auroc: dict[str, float]  # test AUROC per domain (source test and targets)
    profile: str = "paper"
    run_id: str = ""
    variant: str = ""  # "oracle": the dataset's shortcut-free source, a row of its own
    config: dict[str, Any] = field(default_factory=dict)  # TrainConfig.to_dict()
    val_auroc: float = math.nan
    best_epoch: int = 0
    resumed_from: int = 0
    wandb_run: str | None = None
    # What the grid-point selection rules read (dgx/selection.py); NaN where the run has none.
    lam: float = math.nan
    val_auroc_low: float = math.nan
    val_shuffled_auroc: float = math.nan
    val_swapped_auroc: float = math.nan
    draw: int | None = None  # generated data: the data draw this seed trained on (dgx.data.draw_options)

    REQUIRED = ("method", "mask", "dataset", "source", "targets", "phase", "seed", "auroc")
    SELECTION = ("lam", "val_auroc", "val_auroc_low", "val_shuffled_auroc", "val_swapped_auroc")  # the rules' inputs, stored as floats

    def to_attrs(self) -> dict[str, Any]:
        attrs = {
            "method": self.method, "mask": self.mask, "dataset": self.dataset, "source": self.source,
            "targets": list(self.targets), "phase": self.phase, "seed": self.seed, "profile": self.profile,
            "config": self.config, "val_auroc": self.val_auroc, "best_epoch": self.best_epoch,
            "auroc": dict(self.auroc), "resumed_from": self.resumed_from, "run_id": self.run_id,
            "lam": self.lam, "val_auroc_low": self.val_auroc_low, "val_shuffled_auroc": self.val_shuffled_auroc,
            "val_swapped_auroc": self.val_swapped_auroc,
        }
        if self.draw is not None:
            attrs["draw"] = self.draw
        if self.variant:
            attrs["variant"] = self.variant
        if self.wandb_run:
            attrs["wandb_run"] = self.wandb_run
        return attrs

    @classmethod
    def missing(cls, attrs: dict) -> list[str]:
        return [k for k in cls.REQUIRED if k not in attrs]

    @classmethod
    def from_attrs(cls, attrs: dict) -> "TrialRecord":
        """A trial's user attrs as a record (trials from before profiles existed: ``paper``)."""
        config = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}
        return cls(
            method=str(attrs["method"]), mask=str(attrs["mask"]), dataset=str(attrs["dataset"]),
            source=str(attrs["source"]), targets=[str(t) for t in attrs["targets"]], phase=str(attrs["phase"]),
            seed=int(attrs["seed"]), auroc=dict(attrs["auroc"]),
            profile=str(attrs.get("profile", config.get("profile", "paper"))), run_id=str(attrs.get("run_id", "")),
            variant=str(attrs.get("variant", "")), config=config, val_auroc=float(attrs.get("val_auroc", math.nan)),
            best_epoch=int(attrs.get("best_epoch", 0)), resumed_from=int(attrs.get("resumed_from", 0)),
            wandb_run=attrs.get("wandb_run"), lam=float(attrs.get("lam", config.get("lam", math.nan))),
            val_auroc_low=_float(attrs.get("val_auroc_low")), val_shuffled_auroc=_float(attrs.get("val_shuffled_auroc")),
            val_swapped_auroc=_float(attrs.get("val_swapped_auroc")),
            draw=None if attrs.get("draw") is None else int(attrs["draw"]),
        )

    @classmethod
    def from_wandb(cls, config: dict, summary: dict, phase: str) -> "TrialRecord":
        """A W&B run's config (TrainConfig.to_dict) and summary (auroc/<domain>, source, targets)."""
        targets = [str(t) for t in summary.get("targets", [])]
        domains = [str(summary["source"]), *targets]
        auroc = {d: float(summary[f"auroc/{d}"]) for d in domains if summary.get(f"auroc/{d}") is not None}
        return cls(method=str(config["method"]), mask=str(config["mask"]), dataset=str(config["dataset"]),
                   source=str(summary["source"]), targets=targets, phase=phase, seed=int(config["seed"]),
                   auroc=auroc, profile=str(config.get("profile", "paper")), config=dict(config),
                   val_auroc=float(summary.get("val/auroc", math.nan)), best_epoch=int(summary.get("best_epoch", 0)),
                   lam=float(config.get("lam", math.nan)))

    def domains(self) -> list[tuple[str, str]]:
        """(domain, role) pairs: the source first, then the targets in display order."""
        return [(self.source, "source")] + [(t, "target") for t in self.targets]


def _float(value: Any) -> float:
    """A stored number, NaN where absent (Optuna stores NaN attrs as null)."""
    return math.nan if value is None else float(value)



__all__ = ["RUNS", "RESULT", "LAST", "BEST", "SCORES", "GROUPS", "QUARANTINE", "save_groups", "load_groups",
           "digest", "seal", "verify", "quarantine", "run_dir", "atomic_write", "atomic_write_text",
           "atomic_folder", "save_checkpoint", "save_scores", "load_scores", "scores_path", "TrialRecord", "TrainResult",
           "RESULT_FIELDS", "SELECTION_FIELDS"]
