"""Checks of user input that need no torch, Optuna, pandas or data.

The commands call them (through their requests' ``check``, dgx/spec.py) before
importing anything heavy, so a mistyped flag fails in a fraction of a second with
one line. Each raises a
:class:`~dgx.errors.DgxError` saying what is wrong, where, and how to fix it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from dgx.errors import DgxError, unknown_choice

SEED_LIMIT = 2**32  # numpy's seeds are 32-bit
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_number(flag: str, value: float | None, *, positive: bool = False) -> None:
    """``value`` (when given) is a finite number >= 0 (> 0 with ``positive``)."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise DgxError(f"{flag} must be a {kind} number and finite, got {value}; pass e.g. {flag} 1e-3")


def check_seed(seed: int, flag: str = "--seed") -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise DgxError(f"{flag} must be in 0..{SEED_LIMIT - 1}, got {seed}; pass e.g. {flag} 0")


def check_name(flag: str, value: str | None, example: str = "my-sweep") -> None:
    """A name (study, prefix, model): not empty, no surrounding blanks, no control characters."""
    if value is None:
        return
    if not value.strip():
        raise DgxError(f"{flag} is empty; pass a name, e.g. {flag} {example}, or leave {flag} out for the default")
    if value != value.strip() or any(ord(c) < 32 for c in value):
        raise DgxError(f"{flag} {value!r} has leading/trailing blanks or control characters; pass {value.strip()!r}")
    if len(value) > MAX_NAME:
        raise DgxError(f"{flag} is {len(value)} characters long; pass at most {MAX_NAME} (Optuna's SQL storages keep "
                       "512, and dgx adds suffixes such as -oracle.seeds)")


MAX_NAME = 480


def check_study(flag: str, value: str | None) -> None:
    """A study name dgx creates: a name, and not ending in ``.seeds`` (that suffix names a seeds phase)."""
    check_name(flag, value)
    if value is not None and value.endswith(".seeds"):
        raise DgxError(f"{flag} {value!r} ends in .seeds, which dgx reserves for the seeds phase of a study; "
                       f"pass {value[:-len('.seeds')]!r}")


def check_device_name(device: str, flag: str = "--device") -> None:
    """The form of a device name (whether this machine has it is :func:`check_device`'s job)."""
    if not _DEVICE.match(device):
        raise DgxError(f"{flag} {device!r} is not a device dgx can train on; use {' | '.join(DEVICES)}")


def check_device(device: str, *, here: bool = True, flag: str = "--device") -> None:
    """``device`` names one dgx trains on (auto | cpu | cuda | cuda:N | mps) and, with ``here``, one this
    machine has (workers started elsewhere, e.g. by SLURM, check on their own machine). Imports torch
    only for a GPU name."""
    check_device_name(device, flag)
    if device in ("auto", "cpu") or not here:
        return
    import torch  # torch: only to ask for a CUDA device; the other checks stay torch-free

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DgxError(f"{flag} {device}: this machine has no usable CUDA GPU (torch.cuda.is_available() is "
                           f"False); use {flag} cpu or {flag} auto")
        n, index = torch.cuda.device_count(), torch.device(device).index
        if index is not None and index >= n:
            raise DgxError(f"{flag} {device}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}; pick one "
                           f"of them, or {flag} cuda")
    if device == "mps" and not torch.backends.mps.is_available():
        raise DgxError(f"{flag} mps: Apple's MPS backend is not available here; use {flag} cpu or {flag} auto")


def check_folder(path: Path | str, what: str, fix: str = "") -> None:
    """``path`` is a folder dgx can create and write (it may not exist yet); ``what`` names the flag or variable,
    ``fix`` says what to do instead (default: point ``what`` at a writable folder)."""
    fix = fix or f"point {what} at a writable folder"
    path = Path(path)
    probe = path
    while not probe.exists():  # the nearest existing ancestor decides
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"is under {probe}, which is a file"
        raise DgxError(f"{what} {path} {where}, not a folder; {fix}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise DgxError(f"{what} {path} is not writable ({probe} is read-only for this user); {fix}")


def check_out_file(path: Path | str, flag: str = "--out", figure: bool = False) -> None:
    """``path`` can be written as a file: not a folder, and its folder can be created and written; a
    ``figure`` also needs a suffix naming a format dgx writes (.png, .pdf, .svg)."""
    path = Path(path)
    if path.is_dir():
        raise DgxError(f"{flag} {path} is a folder; pass a file name, e.g. {flag} {path / ('figure.png' if figure else 'report.md')}")
    if figure:
        from dgx.plotting import figure_format  # numpy (dgx.plotting): only for a figure path

        figure_format(path, flag)
    check_folder(path.parent, f"{flag} {path}: its folder", f"pass {flag} a file in a writable folder")


def check_choice(kind: str, value: str | None, choices) -> None:
    if value is not None and value not in choices:
        raise unknown_choice(kind, value, choices)


# The names `dgx sweep` takes (dgx.sweep.study and dgx.sweep.launch use these; a test keeps them in step).
SAMPLERS = ("grid", "tpe", "random")
PRUNERS = ("none", "median", "hyperband", "asha")
SELECTION_RULES = ("val", "swapped", "shuffled", "lam-ci")  # dgx/selection.py: which grid point the seeds phase retrains
LAUNCHERS = ("process", "slurm", "local")


def parse_gpus(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    ids = tuple(g.strip() for g in text.split(",") if g.strip())
    if not ids or not all(g.isdigit() for g in ids):
        raise DgxError(f"--gpus {text!r} must be comma-separated device numbers, e.g. --gpus 0,1,2,3")
    return ids


def check_storage_url(url: str | None, flag: str = "--storage") -> None:
    if url is not None and "://" not in url:
        raise DgxError(f"{flag} {url!r} is not a storage URL; use sqlite:///runs/dgx.db, journal:///path/file.journal "
                       "or postgresql://user@host/db")


def storage_file(url: str) -> Path | None:
    """The file behind an SQLite or Journal storage URL (None for a server or an in-memory database)."""
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            path = url[len(scheme) - (1 if scheme == "journal:///" else 0):].split("?", 1)[0]
            return Path(path) if path and path != ":memory:" else None
    return None


def parse_options(items: list[str] | None, flag: str = "--data-opt",
                  example: str = "decoy_strength=0.99") -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings as sorted pairs."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DgxError(f"{flag} {item!r} must look like KEY=VALUE, e.g. {flag} {example}")
        out[key.strip()] = value.strip()
    return tuple(sorted(out.items()))


__all__ = ["check_number", "check_seed", "check_name", "check_study", "check_device_name", "check_folder",
           "check_out_file", "check_choice", "check_device", "check_storage_url", "storage_file",
           "parse_gpus", "parse_options", "DEVICES", "SAMPLERS", "PRUNERS", "LAUNCHERS", "SELECTION_RULES"]
