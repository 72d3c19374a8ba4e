# A battery of 158 bad inputs (test_battery_size asserts at least 60) through the real entry point `python -m dgx`:
# train 58, report 31, sweep 17, data 10, worker 9, reproduce 9, environment and .env 8, analyze 7, masks 5,
# the command line itself 3, doctor 1. On 2 idle CPU cores the battery takes about 65 s (slowest case ~4.5 s, median 0.6 s);
# while other jobs share the cores, up to about 2 minutes (`pytest -s` prints the timings).
"""Nothing a user types ends in a traceback or a silent wrong result.

Every case runs ``python -m dgx ...`` in a fresh folder (cwd, HOME, DGX_RUNS_DIR
and DGX_DATA_DIR inside it, W&B disabled) and must

- exit with code 2,
- print exactly one line (stdout and stderr together) that starts with
  ``error:``, names the problem (the case's keywords) and says how to fix it,
- print no traceback,
- leave the folder exactly as it was: no file or folder created or changed,
- fail fast: validation comes before any data generation or training, and a
  tiny budget makes work that slipped through visible in the snapshot.

The cases run as subprocesses two at a time; the slowest one is reported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import HANG_S

# A budget small enough that any work done before a late failure shows up as files, and fast.
TINY = ["--model", "resnet18-w16", "--weights", "none", "--image-size", "32", "--epochs", "1",
        "--data-opt", "n_train=32", "--data-opt", "n_val=16", "--data-opt", "n_test=16",
        "--data-opt", "n_target=16"]
FIX_WORDS = ("use ", "pass ", "choose", "set ", "run ", "check", "add ", "drop ", "fix", "give ", "see", "pick",
             "save", "point", "create", "remove", "install", "rename", "put ", "copy", "unset", "rebuild",
             "lower", "raise", "move", "queue", "start", "must", "need")


@dataclass
class Case:
    id: str
    args: list[str]  # after `python -m dgx`; "{tmp}" is the case's folder
    words: tuple[str, ...] = ()  # the message must mention these (case-insensitive)
    env: dict[str, str] = field(default_factory=dict)  # "{tmp}" expanded too
    setup: Callable[[Path], None] | None = None  # files the case needs, made before the snapshot
    never: tuple[str, ...] = ()  # the message must not mention these
    skip: str = ""  # a reason to skip on this machine


# ---------------------------------------------------------------- setups

def write(name: str, data: bytes | str) -> Callable[[Path], None]:
    """A file ``name`` holding ``data`` ("{tmp}" in text is the case's folder)."""
    def make(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_expand(data, tmp).encode() if isinstance(data, str) else data)
    return make


def folder(name: str, mode: int | None = None) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        (tmp / name).mkdir(parents=True, exist_ok=True)
        if mode is not None:
            os.chmod(tmp / name, mode)
    return make


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        for step in steps:
            step(tmp)
    return make


RUN_ID = "0123456789abcdef"


def storage(scores: bytes | None = None) -> Callable[[Path], None]:
    """An SQLite storage with one finished RRR trial and one ERM trial (dgx's user attrs); with ``scores``, the
    RRR run's folder holds those bytes as its scores.npz."""
    def make(tmp: Path) -> None:
        import optuna
        from optuna.distributions import FloatDistribution
        from optuna.trial import TrialState, create_trial

        from dgx.data.decoy import SOURCE, TARGETS

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name="exp-rrr.seeds", storage=f"sqlite:///{tmp}/db.sqlite3",
                                    direction="maximize")
        for method, mask in (("erm", "none"), ("rrr", "periphery")):
            attrs = {"method": method, "mask": mask, "dataset": "decoy-cxr", "source": SOURCE,
                     "targets": list(TARGETS), "phase": "seeds", "seed": 0, "val_auroc": 0.9,
                     "auroc": dict.fromkeys([SOURCE, *TARGETS], 0.7), "config": {"lr": 1e-4},
                     "run_id": RUN_ID if method == "rrr" else ""}
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, params={"lr": 1e-4},
                                         distributions={"lr": FloatDistribution(1e-5, 1e-3, log=True)},
                                         user_attrs=attrs))
        if scores is not None:
            write(f"runs/runs/{RUN_ID}/scores.npz", scores)(tmp)
    return make


DB = "sqlite:///{tmp}/db.sqlite3"
GARBAGE = bytes(range(256)) * 8  # not a zip, not a pickle, not UTF-8
BUDGET = "description: bad\ngrid: quick\nseeds: 3\ntrain: {model: resnet18-w16, weights: none, image_size: 32, epochs: 1}\n"
MANIFEST_HEAD = "image,label,domain,split,patient_id,age,sex,view,abnormality,lung\n"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


# ---------------------------------------------------------------- the cases

CASES: list[Case] = [
    # --- dgx train: numbers that pass a type check and fail later
    Case("train-lr-inf", ["train", "erm", *TINY, "--lr", "inf"], ("--lr", "inf")),
    Case("train-lr-nan", ["train", "erm", *TINY, "--lr", "nan"], ("--lr", "nan")),
    Case("train-lr-negative", ["train", "erm", *TINY, "--lr", "-0.001"], ("--lr",)),
    Case("train-lr-zero", ["train", "erm", *TINY, "--lr", "0"], ("--lr",)),
    Case("train-wd-negative", ["train", "erm", *TINY, "--wd", "-1"], ("--wd",)),
    Case("train-wd-inf", ["train", "erm", *TINY, "--wd", "inf"], ("--wd", "inf")),
    Case("train-lam-inf", ["train", "rrr", "--mask", "periphery", *TINY, "--lam", "inf"], ("--lam", "inf")),
    Case("train-lam-nan", ["train", "rrr", "--mask", "periphery", *TINY, "--lam", "nan"], ("--lam", "nan")),
    Case("train-lam-negative", ["train", "rrr", "--mask", "periphery", *TINY, "--lam", "-0.5"], ("--lam",)),
    Case("train-lr-not-a-number", ["train", "erm", *TINY, "--lr", "fast"], ("--lr", "number")),
    Case("train-seed-negative", ["train", "erm", *TINY, "--seed", "-1"], ("--seed", "-1")),
    Case("train-seed-huge", ["train", "erm", *TINY, "--seed", str(2**40)], ("--seed",)),
    Case("train-epochs-negative", ["train", "erm", *TINY, "--epochs", "-1"], ("--epochs",)),
    Case("train-batch-1", ["train", "erm", *TINY, "--batch-size", "1"], ("--batch-size",)),
    Case("train-image-size-tiny", ["train", "erm", *TINY, "--image-size", "8"], ("--image-size",)),
    # --- devices that do not exist here
    Case("train-device-tpu", ["train", "erm", *TINY, "--device", "tpu"], ("--device", "tpu")),
    Case("train-device-cuda7", ["train", "erm", *TINY, "--device", "cuda:7"], ("--device", "cuda:7"),
         skip="this machine has 8 GPUs" if _cuda() and __import__("torch").cuda.device_count() > 7 else ""),
    Case("train-device-cuda-none", ["train", "erm", *TINY, "--device", "cuda"], ("--device", "cuda"),
         skip="this machine has a GPU" if _cuda() else ""),
    Case("train-device-garbage", ["train", "erm", *TINY, "--device", "cuda:x"], ("--device",)),
    # --- a model whose input size does not fit the image size
    Case("train-vit-32px", ["train", "erm", *TINY, "--model", "vit_b_16"], ("vit_b_16", "32")),
    # --- unknown names
    Case("train-unknown-method", ["train", "bogus", *TINY], ("method", "bogus", "erm")),
    Case("train-unknown-mask", ["train", "rrr", "--mask", "bogus", *TINY], ("mask", "bogus", "periphery")),
    Case("train-unknown-data", ["train", "erm", "--data", "bogus", *TINY], ("dataset", "bogus", "decoy-cxr")),
    Case("train-unknown-model", ["train", "erm", *TINY, "--model", "bogusnet"], ("model", "bogusnet")),
    Case("train-unknown-profile", ["train", "erm", *TINY, "--profile", "bogus"], ("profile", "bogus", "official")),
    Case("train-unknown-data-opt", ["train", "erm", *TINY, "--data-opt", "bogus_key=1"], ("bogus_key", "n_train")),
    Case("train-data-opt-not-a-number", ["train", "erm", *TINY, "--data-opt", "n_train=many"], ("n_train", "many")),
    Case("train-data-opt-no-equals", ["train", "erm", *TINY, "--data-opt", "n_train"], ("--data-opt", "KEY=VALUE")),
    Case("train-data-opt-out-of-range", ["train", "erm", *TINY, "--data-opt", "pos_frac=2"], ("pos_frac",)),
    Case("train-model-empty", ["train", "erm", *TINY, "--model", ""], ("--model", "empty")),
    Case("train-weights-empty", ["train", "erm", *TINY, "--weights", " "], ("--weights", "empty")),
    Case("train-mask-empty", ["train", "rrr", "--mask", "", *TINY], ("--mask", "empty")),
    Case("train-profile-empty", ["train", "erm", *TINY, "--profile", ""], ("--profile", "empty")),
    Case("train-budget-empty", ["train", "erm", *TINY, "--budget", ""], ("budget",)),
    Case("train-image-size-below-decoy", ["train", "erm", *TINY, "--image-size", "20"], ("image_size", "24")),
    Case("train-gaze-mask-on-decoy", ["train", "rrr", "--mask", "gaze", *TINY], ("gaze", "periphery")),
    Case("train-unknown-actdiff-layers", ["train", "actdiff", "--mask", "periphery", *TINY, "--method-opt", "layers=some"],
         ("--method-opt layers=some", "all, last")),
    Case("train-unknown-method-option", ["train", "rrr", "--mask", "periphery", *TINY, "--method-opt", "layers=last"],
         ("method rrr has no option 'layers'", "drop --method-opt")),
    Case("train-method-option-syntax", ["train", "actdiff", "--mask", "periphery", *TINY, "--method-opt", "layers"],
         ("--method-opt 'layers'", "KEY=VALUE")),
    Case("train-unknown-negative-masks", ["train", "rrr", "--mask", "periphery", *TINY, "--negative-masks", "bogus"],
         ("negative-masks", "bogus")),
    Case("train-unknown-budget", ["train", "erm", *TINY, "--budget", "bogus"], ("budget", "bogus", "quick")),
    Case("train-unknown-weights-tag", ["train", "erm", *TINY, "--model", "resnet18", "--weights", "imagenet:BOGUS"],
         ("BOGUS", "IMAGENET1K_V1")),
    # --- zero optimizer steps
    Case("train-ntrain-below-batch", ["train", "erm", *TINY, "--data-opt", "n_train=8", "--batch-size", "16"],
         ("batch", "16", "8")),
    Case("train-batch-above-ntrain", ["train", "erm", *TINY, "--batch-size", "64"], ("batch", "64", "32")),
    # --- files
    Case("train-weights-garbage", ["train", "erm", *TINY, "--weights", "{tmp}/w.pt"], ("w.pt",),
         setup=write("w.pt", GARBAGE), never=("weights_only=False", "weights_only = False")),
    Case("train-weights-pickle", ["train", "erm", *TINY, "--weights", "{tmp}/w.pt"], ("w.pt",),
         setup=write("w.pt", b"\x80\x04\x95\x11\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.")),
    Case("train-weights-missing", ["train", "erm", *TINY, "--weights", "{tmp}/missing.pt"], ("missing.pt",)),
    Case("train-runs-dir-file", ["train", "erm", *TINY, "--runs-dir", "{tmp}/afile"], ("afile",),
         setup=write("afile", "x")),
    Case("train-runs-dir-under-file", ["train", "erm", *TINY, "--runs-dir", "{tmp}/afile/runs"], ("afile",),
         setup=write("afile", "x")),
    Case("train-runs-dir-readonly", ["train", "erm", *TINY, "--runs-dir", "{tmp}/ro/runs"], ("ro",),
         setup=folder("ro", 0o500), skip="root writes into read-only folders" if IS_ROOT else ""),
    Case("train-env-runs-dir-file", ["train", "erm", *TINY], ("DGX_RUNS_DIR", "afile"),
         env={"DGX_RUNS_DIR": "{tmp}/afile"}, setup=write("afile", "x")),
    Case("train-env-data-dir-file", ["train", "erm", *TINY], ("DGX_DATA_DIR", "afile"),
         env={"DGX_DATA_DIR": "{tmp}/afile"}, setup=write("afile", "x")),
    Case("train-budget-non-numeric", ["train", "erm", *TINY, "--budget", "{tmp}/b.yaml"], ("b.yaml", "lr"),
         setup=write("b.yaml", BUDGET + "defaults: {lr: fast, wd: 0.0, lam: 0.1}\n")),
    Case("train-budget-seeds-text", ["train", "erm", *TINY, "--budget", "{tmp}/b.yaml"], ("b.yaml", "seeds"),
         setup=write("b.yaml", BUDGET.replace("seeds: 3", "seeds: three"))),
    Case("train-budget-bad-train-value", ["train", "erm", "--budget", "{tmp}/b.yaml"], ("b.yaml", "epochs"),
         setup=write("b.yaml", BUDGET.replace("epochs: 1", "epochs: many"))),
    Case("train-budget-not-yaml", ["train", "erm", *TINY, "--budget", "{tmp}/b.yaml"], ("b.yaml", "YAML"),
         setup=write("b.yaml", "defaults: {lr: [\n")),
    Case("train-budget-missing", ["train", "erm", *TINY, "--budget", "{tmp}/none.yaml"], ("none.yaml",)),
    Case("train-budget-unknown-key", ["train", "erm", *TINY, "--budget", "{tmp}/b.yaml"], ("b.yaml", "epoch"),
         setup=write("b.yaml", BUDGET.replace("epochs: 1", "epoch: 1"))),
    Case("train-real-data-unprepared", ["train", "erm", "--data", "cxr-p", "--model", "resnet18-w16", "--weights",
                                        "none", "--epochs", "1"], ("manifest", "dgx data prepare")),
    Case("train-budget-unknown-grid", ["train", "erm", *TINY, "--budget", "{tmp}/b.yaml"], ("b.yaml", "grid"),
         setup=write("b.yaml", BUDGET.replace("grid: quick", "grid: bogus"))),
    # --- the environment and .env
    Case("env-heartbeat-abc", ["train", "erm", *TINY], ("DGX_HEARTBEAT_S", "abc"), env={"DGX_HEARTBEAT_S": "abc"}),
    Case("env-grace-negative", ["worker"], ("DGX_GRACE_S",), env={"DGX_GRACE_S": "-5"}),
    Case("env-wandb-mode-bogus", ["train", "erm", *TINY], ("WANDB_MODE", "bogus"), env={"WANDB_MODE": "bogus"}),
    Case("env-dotenv-not-utf8", ["train", "erm", *TINY], (".env", "UTF-8"), setup=write(".env", b"DGX_RUNS_DIR=\xff\xfe\n")),
    Case("env-dotenv-bad-value", ["report"], ("DGX_HEARTBEAT_S", "soon"), setup=write(".env", "DGX_HEARTBEAT_S=soon\n")),
    Case("env-sweeps-dir-missing", ["train", "erm", *TINY], ("DGX_SWEEPS_DIR", "nowhere"),
         env={"DGX_SWEEPS_DIR": "{tmp}/nowhere"}),
    Case("env-storage-not-a-url", ["report"], ("DGX_STORAGE",), env={"DGX_STORAGE": "runs/dgx.db"}),
    # --- dgx sweep
    Case("sweep-study-empty", ["sweep", "rrr", "--mask", "periphery", *TINY, "--study", ""], ("--study",)),
    Case("sweep-study-blank", ["sweep", "rrr", "--mask", "periphery", *TINY, "--study", "   "], ("--study",)),
    Case("sweep-unknown-sampler", ["sweep", "rrr", "--mask", "periphery", *TINY, "--sampler", "bogus"],
         ("sampler", "bogus", "grid")),
    Case("sweep-unknown-pruner", ["sweep", "rrr", "--mask", "periphery", *TINY, "--pruner", "bogus"],
         ("pruner", "bogus", "median")),
    Case("sweep-unknown-launcher", ["sweep", "rrr", "--mask", "periphery", *TINY, "--launcher", "bogus"],
         ("launcher", "bogus", "slurm")),
    Case("sweep-slurm-without-srun", ["sweep", "rrr", "--mask", "periphery", *TINY, "--launcher", "slurm",
                                      "--storage", "journal:///{tmp}/j.journal"], ("slurm", "srun"),
         skip="srun is installed here" if shutil.which("srun") else ""),
    Case("sweep-gpus-garbage", ["sweep", "rrr", "--mask", "periphery", *TINY, "--gpus", "a,b"], ("--gpus", "a,b")),
    Case("sweep-workers-sqlite", ["sweep", "rrr", "--mask", "periphery", *TINY, "--workers", "2"], ("sqlite", "journal")),
    Case("sweep-storage-not-url", ["sweep", "rrr", "--mask", "periphery", *TINY, "--storage", "dgx.db"], ("dgx.db", "sqlite")),
    Case("sweep-storage-under-file", ["sweep", "rrr", "--mask", "periphery", *TINY, "--storage",
                                      "sqlite:///{tmp}/afile/dgx.db"], ("afile",), setup=write("afile", "x")),
    Case("sweep-device-tpu", ["sweep", "rrr", "--mask", "periphery", *TINY, "--device", "tpu"], ("--device", "tpu")),
    Case("sweep-ntrain-below-batch", ["sweep", "rrr", "--mask", "periphery", *TINY, "--data-opt", "n_train=8"],
         ("batch", "8")),
    Case("sweep-trials-zero", ["sweep", "rrr", "--mask", "periphery", *TINY, "--trials", "0"], ("--trials",)),
    Case("sweep-unknown-mask", ["sweep", "rrr", "--mask", "lungs", *TINY], ("mask", "lungs")),
    Case("sweep-grid-non-numeric", ["sweep", "rrr", "--mask", "periphery", *TINY, "--budget", "{tmp}/b.yaml"],
         ("g.yaml", "lr"), setup=both(write("b.yaml", BUDGET.replace("grid: quick", "grid: {tmp}/g.yaml")),
                                      write("g.yaml", "lr: [fast]\nlam: [0.1]\n"))),
    Case("sweep-seed-study-reserved", ["sweep", "rrr", "--mask", "periphery", *TINY, "--study", "x.seeds"],
         ("--study", ".seeds")),
    # --- dgx worker
    Case("worker-no-storage", ["worker"], ("dgx sweep",)),
    Case("worker-empty-journal", ["worker", "--storage", "journal:///{tmp}/j.journal"], ("dgx sweep",),
         setup=write("j.journal", "")),
    Case("worker-missing-journal", ["worker", "--storage", "journal:///{tmp}/none.journal"], ("none.journal",)),
    Case("worker-malformed-journal", ["worker", "--storage", "journal:///{tmp}/j.journal"], ("j.journal",),
         setup=write("j.journal", "this is not a journal\n{\n")),
    Case("worker-no-dgx-studies", ["worker", "--storage", DB], ("dgx sweep",), setup=storage()),
    Case("worker-unknown-study", ["worker", "--storage", DB, "--study", "bogus"], ("bogus",), setup=storage()),
    Case("worker-study-empty", ["worker", "--storage", DB, "--study", ""], ("--study",), setup=storage()),
    Case("worker-device-tpu", ["worker", "--storage", DB, "--device", "tpu"], ("--device", "tpu"), setup=storage()),
    Case("worker-storage-not-url", ["worker", "--storage", "nothing"], ("nothing",)),
    # --- dgx report
    Case("report-no-storage", ["report"], ("dgx.db",)),
    Case("report-storage-missing", ["report", "--storage", "sqlite:///{tmp}/none.db"], ("none.db",)),
    Case("report-storage-not-sqlite", ["report", "--storage", "sqlite:///{tmp}/fake.db"], ("fake.db",),
         setup=write("fake.db", "this is not an SQLite database\n" * 20)),
    Case("report-storage-malformed-journal", ["report", "--storage", "journal:///{tmp}/j.journal"], ("j.journal",),
         setup=write("j.journal", GARBAGE)),
    Case("report-out-folder", ["report", "--storage", DB, "--out", "{tmp}/outdir"], ("outdir", "--out"),
         setup=both(storage(), folder("outdir"))),
    Case("report-out-under-file", ["report", "--storage", DB, "--out", "{tmp}/afile/t.md"], ("afile",),
         setup=both(storage(), write("afile", "x"))),
    Case("report-figure-out-folder", ["report", "--storage", DB, "--figure", "bars", "--out", "{tmp}/outdir"],
         ("outdir",), setup=both(storage(), folder("outdir"))),
    Case("report-baseline-unknown-mask", ["report", "--storage", DB, "--baseline", "mask:bogus"],
         ("bogus", "periphery"), setup=storage()),
    Case("report-baseline-absent-mask", ["report", "--storage", DB, "--baseline", "mask:abnormality"],
         ("abnormality", "periphery"), setup=storage()),
    Case("report-baseline-bogus", ["report", "--storage", DB, "--baseline", "bogus"], ("--baseline", "bogus"),
         setup=storage()),
    Case("report-unknown-table", ["report", "--storage", DB, "--table", "9"], ("table", "9")),
    Case("report-unknown-format", ["report", "--storage", DB, "--format", "xml"], ("format", "xml")),
    Case("report-unknown-phase", ["report", "--storage", DB, "--phase", "bogus"], ("phase", "bogus")),
    Case("report-unknown-figure", ["report", "--storage", DB, "--figure", "pie"], ("figure", "pie")),
    Case("report-unknown-run-ci", ["report", "--storage", DB, "--run-ci", "bogus"], ("run-ci", "bogus")),
    Case("report-unknown-by", ["report", "--storage", DB, "--by", "bogus"], ("--by", "bogus")),
    Case("report-unknown-source", ["report", "--source", "bogus"], ("source", "bogus")),
    Case("report-unknown-test", ["report", "--storage", DB, "--baseline", "erm", "--test", "z"], ("test", "z")),
    Case("report-unknown-method", ["report", "--storage", DB, "--method", "bogus"], ("method", "bogus"),
         setup=storage()),
    Case("report-unknown-mask", ["report", "--storage", DB, "--mask", "bogus"], ("mask", "bogus"), setup=storage()),
    Case("report-unknown-dataset", ["report", "--storage", DB, "--dataset", "mnist"], ("dataset", "mnist"),
         setup=storage()),
    Case("report-storage-folder", ["report", "--storage", "sqlite:///{tmp}/adir"], ("adir", "folder"),
         setup=folder("adir")),
    Case("report-out-empty", ["report", "--storage", DB, "--out", ""], ("--out",), setup=storage()),
    Case("report-study-empty", ["report", "--storage", DB, "--study", ""], ("--study",), setup=storage()),
    Case("report-unknown-study", ["report", "--storage", DB, "--study", "nope"], ("nope", "exp-rrr"), setup=storage()),
    Case("report-by-corrupt-scores", ["report", "--storage", DB, "--by", "decoy"], ("scores.npz",),
         setup=storage(GARBAGE)),
    Case("report-run-ci-corrupt-scores", ["report", "--storage", DB, "--run-ci", "delong"], ("scores.npz",),
         setup=storage(GARBAGE)),
    Case("report-roc-corrupt-scores", ["report", "--storage", DB, "--figure", "roc", "--out", "{tmp}/roc.png"],
         ("scores.npz",), setup=storage(GARBAGE)),
    # --- dgx reproduce
    Case("reproduce-unknown", ["reproduce", "bogus"], ("bogus", "table1")),
    Case("reproduce-unknown-profile", ["reproduce", "decoy-masks", "--dry-run", "--profile", "bogus"],
         ("profile", "bogus")),
    Case("reproduce-unknown-data", ["reproduce", "decoy-masks", "--dry-run", "--data", "bogus"], ("dataset", "bogus")),
    Case("reproduce-unknown-budget", ["reproduce", "decoy-masks", "--dry-run", "--budget", "bogus"], ("budget", "bogus")),
    Case("reproduce-device-tpu", ["reproduce", "decoy-masks", "--device", "tpu"], ("--device", "tpu")),
    Case("reproduce-malformed-spec", ["reproduce", "x", "--dry-run"], ("x.yaml",),
         env={"DGX_SWEEPS_DIR": "{tmp}/sweeps"}, setup=both(folder("sweeps/budgets"), folder("sweeps/grids"),
                                                           write("sweeps/paper/x.yaml", "data: [\n"))),
    Case("reproduce-workers-sqlite", ["reproduce", "decoy-masks", "--dry-run", "--workers", "2"], ("sqlite", "journal")),
    Case("reproduce-gpus-garbage", ["reproduce", "decoy-masks", "--dry-run", "--gpus", "x"], ("--gpus", "x")),
    # --- dgx analyze
    Case("analyze-gaze-no-reference", ["analyze", "gaze", "--reference", "{tmp}/ref"], ("ref", "cxr_p_splits.csv"),
         setup=folder("ref")),
    Case("analyze-attribution-unknown-phase", ["analyze", "attribution", "--phase", "bogus"], ("phase", "bogus")),
    Case("analyze-attribution-no-storage", ["analyze", "attribution"], ("dgx.db",)),
    Case("analyze-attribution-device-tpu", ["analyze", "attribution", "--storage", DB, "--device", "tpu"],
         ("--device", "tpu"), setup=storage()),
    # --- issue 24's battery: each case failed on the code before it (traceback, silent acceptance or wrong blame)
    Case("doctor-device-tpu", ["doctor", "--device", "tpu"], ("--device", "tpu"), setup=folder("runs")),
    Case("analyze-gaze-corrupt-gzip", ["analyze", "gaze", "--reference", "{tmp}/ref"], ("cxr_p_gaze.csv.gz", "damaged"),
         setup=both(write("ref/cxr_p_splits.csv", "image_id,split\n"), write("ref/cxr_p_gaze.csv.gz", GARBAGE))),
    Case("analyze-gaze-truncated-gzip", ["analyze", "gaze", "--reference", "{tmp}/ref"], ("cxr_p_gaze.csv.gz", "EOFError"),
         setup=both(write("ref/cxr_p_splits.csv", "image_id,split\n"),
                    write("ref/cxr_p_gaze.csv.gz", __import__("gzip").compress(b"image_id,x\n" * 50)[:30]))),
    Case("analyze-attribution-unknown-domain", ["analyze", "attribution", "--storage", DB, "--domain", "bogus"],
         ("--domain", "bogus", "mimic"), setup=both(storage(), write(f"runs/runs/{RUN_ID}/best.pt", GARBAGE))),
    Case("env-dotenv-unparsable-then-bad", ["report"], ("DGX_HEARTBEAT_S", "soon"),
         setup=write(".env", "not a statement\n\"open\nDGX_HEARTBEAT_S=soon\n")),
    Case("reproduce-sweeps-dir-empty", ["reproduce", "table1", "--dry-run"], ("DGX_SWEEPS_DIR", "paper"),
         env={"DGX_SWEEPS_DIR": "{tmp}/sweeps"}, setup=both(folder("sweeps/budgets"), folder("sweeps/grids"),
                                                           folder("sweeps/paper")), never=("table1",)),
    Case("report-study-too-long", ["report", "--storage", DB, "--study", "x" * 3000], ("--study", "480")),
    Case("sweep-study-too-long", ["sweep", "rrr", "--mask", "periphery", *TINY, "--study", "x" * 3000],
         ("--study", "480")),
    Case("report-figure-bad-suffix", ["report", "--storage", DB, "--figure", "bars", "--out", "{tmp}/f.jpg"],
         ("--out", ".png", ".jpg"), setup=storage()),
    Case("masks-figure-bad-suffix", ["masks", "show", "--data-opt", "n_train=32", "--out", "{tmp}/m.gif"],
         ("--out", ".gif")),
    Case("report-out-unwritable-folder", ["report", "--storage", DB, "--out", "{tmp}/ro/r.md"], ("ro",),
         setup=both(storage(), folder("ro", 0o500)), skip="root writes into read-only folders" if IS_ROOT else ""),
    # --- dgx masks
    Case("masks-unknown-data", ["masks", "show", "--data", "bogus"], ("dataset", "bogus")),
    Case("masks-unknown-data-opt", ["masks", "show", "--data-opt", "bogus=1"], ("bogus", "n_train")),
    Case("masks-out-folder", ["masks", "show", "--data-opt", "n_train=32", "--out", "{tmp}/outdir"], ("outdir",),
         setup=folder("outdir")),
    Case("masks-index-out-of-range", ["masks", "show", "--data-opt", "n_train=32", "--index", "50"], ("--index", "50")),
    # --- dgx data
    Case("data-prepare-unknown-source", ["data", "prepare", "bogus", "--root", "{tmp}"], ("bogus", "siim")),
    Case("data-prepare-root-missing", ["data", "prepare", "siim", "--root", "{tmp}/none"], ("none",)),
    Case("data-prepare-splits-wrong-source", ["data", "prepare", "chexpert", "--root", "{tmp}", "--splits",
                                              "{tmp}/s.csv"], ("--splits", "siim")),
    Case("data-prepare-opt-no-equals", ["data", "prepare", "siim", "--root", "{tmp}", "--opt", "n"], ("--opt", "KEY=VALUE")),
    Case("data-cache-manifest-bad-column", ["data", "cache", "--root", "{tmp}", "--manifests", "{tmp}/m/a.train.csv"],
         ("a.train.csv", "label"), setup=write("m/a.train.csv", MANIFEST_HEAD.replace("label", "labl") + "x.png,1,a,train,p,50,M,PA,,\n")),
    Case("data-cache-manifest-bad-value", ["data", "cache", "--root", "{tmp}", "--manifests", "{tmp}/m/a.train.csv"],
         ("a.train.csv", "label"), setup=write("m/a.train.csv", MANIFEST_HEAD + "x.png,yes,a,train,p,50,M,PA,,\n")),
    Case("data-cache-no-manifests", ["data", "cache", "--root", "{tmp}"], ("manifests", "dgx data prepare")),
    Case("data-cache-gaze-missing", ["data", "cache", "--root", "{tmp}", "--manifests", "{tmp}/m/a.train.csv",
                                     "--gaze", "{tmp}/gaze.csv"], ("gaze.csv",),
         setup=write("m/a.train.csv", MANIFEST_HEAD + "x.png,1,a,train,p,50,M,PA,,\n")),
    Case("data-cache-root-missing", ["data", "cache", "--root", "{tmp}/none", "--manifests", "{tmp}/m/a.train.csv"],
         ("none",), setup=write("m/a.train.csv", MANIFEST_HEAD + "x.png,1,a,train,p,50,M,PA,,\n")),
    Case("data-cache-lung-model-missing", ["data", "cache", "--root", "{tmp}", "--manifests", "{tmp}/m/a.train.csv",
                                           "--lung-model", "{tmp}/lungs.pth"], ("lungs.pth",),
         setup=write("m/a.train.csv", MANIFEST_HEAD + "x.png,1,a,train,p,50,M,PA,,\n")),
    # --- the command line itself
    Case("cli-unknown-command", ["bogus"], ("bogus",)),
    Case("cli-missing-argument", ["train"], ("METHOD",)),
    Case("cli-unknown-option", ["train", "erm", "--bogus"], ("--bogus",)),
]


# ---------------------------------------------------------------- running them

def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: a file's mode, size and modification time; a folder's mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            is_file = name in filenames  # a folder's own mtime moves with lock files and is not compared
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns) if is_file else (st.st_mode,)
    return out


def _expand(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


# A hang guard only: a case takes 0.3-9 s on 2 idle cores and several times that on a machine loaded by other
# jobs, which a 60 s limit could reach. Work a case does instead of failing shows as files (the snapshot), a
# zero exit code or more output; only a case that never exits needs this.
LIMIT_S = HANG_S


@dataclass
class Outcome:
    code: int
    output: str
    seconds: float
    before: dict
    after: dict


def run_case(case: Case, root: Path) -> Outcome:
    tmp = root / case.id
    (tmp / "home").mkdir(parents=True)
    if case.setup is not None:
        case.setup(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DGX_", "WANDB_"))}
    env.update(HOME=str(tmp / "home"), DGX_RUNS_DIR=str(tmp / "runs"), DGX_DATA_DIR=str(tmp / "data"),
               WANDB_MODE="disabled", DGX_LUNG_MODEL=str(tmp / "no-lung-model.pth"), PYTHONWARNINGS="default",
               COLUMNS="200", OMP_NUM_THREADS="1")
    env.update({k: _expand(v, tmp) for k, v in case.env.items()})
    before = snapshot(tmp)
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "dgx", *[_expand(a, tmp) for a in case.args]], cwd=tmp, env=env,
                              capture_output=True, text=True, errors="replace", timeout=LIMIT_S,
                              stdin=subprocess.DEVNULL, check=False)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired:
        code, output = -9, f"still running after {LIMIT_S} s: it started working instead of failing"
    seconds = time.perf_counter() - started
    after = snapshot(tmp)
    for dirpath, _, _ in os.walk(tmp):  # let pytest clean a read-only folder up
        os.chmod(dirpath, 0o755)
    return Outcome(code, output, seconds, before, after)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("bad-inputs")
    chosen = [c for c in CASES if not c.skip]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip([c.id for c in chosen], pool.map(lambda c: run_case(c, root), chosen)))
    wall = time.perf_counter() - started
    slow = sorted(results, key=lambda k: -results[k].seconds)
    print(f"\nbad-input battery: {len(chosen)} cases in {wall:.1f} s; slowest: "
          + ", ".join(f"{k} {results[k].seconds:.1f} s" for k in slow[:5])
          + f"; median {results[slow[len(slow) // 2]].seconds:.1f} s")
    return results


def test_battery_size():
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_sweep_names_in_step():
    """The names `dgx sweep` checks before its slow imports are the ones its sampler and pruner factories take."""
    from dgx import checks
    from dgx.sweep import study

    assert checks.SAMPLERS == study.SAMPLERS and checks.PRUNERS == study.PRUNERS


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, outcomes):
    if case.skip:
        pytest.skip(case.skip)
    got = outcomes[case.id]
    lines = [line for line in got.output.splitlines() if line.strip()]
    shown = "\n".join(lines[-15:])
    assert "Traceback" not in got.output, shown
    assert got.code == 2, f"exit code {got.code}:\n{shown}"
    assert len(lines) == 1, f"{len(lines)} lines:\n{shown}"
    line = lines[0]
    assert line.startswith("error: "), line
    lowered = line.lower()
    missing = [w for w in case.words if w.lower() not in lowered]
    assert not missing, f"does not mention {missing}: {line}"
    assert not [w for w in case.never if w.lower() in lowered], line
    assert any(w in lowered for w in FIX_WORDS), f"says no fix: {line}"
    created = sorted(set(got.after) - set(got.before))
    changed = sorted(k for k in set(got.after) & set(got.before) if got.after[k] != got.before[k])
    assert not created and not changed, f"created {created[:8]}, changed {changed[:8]}: {line}"


if __name__ == "__main__":  # python -m tests.test_bad_inputs [ID-SUBSTRING ...]: each case's outcome, for debugging
    import tempfile

    wanted = [c for c in CASES if not c.skip and (len(sys.argv) < 2 or any(a in c.id for a in sys.argv[1:]))]
    with tempfile.TemporaryDirectory() as folder_name, ThreadPoolExecutor(max_workers=2) as pool:
        for case, got in zip(wanted, pool.map(lambda c: run_case(c, Path(folder_name)), wanted)):
            created = sorted(set(got.after) - set(got.before))
            lines = [line for line in got.output.splitlines() if line.strip()]
            print(f"=== {case.id}: exit {got.code}, {len(lines)} lines, {got.seconds:.1f} s, created {created[:4]}")
            print("    " + "\n    ".join(lines[-3:]))
