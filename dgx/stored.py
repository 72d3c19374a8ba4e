"""A finished run folder read back: its result when the folder verifies (sealed sizes and hashes), with
what older versions of dgx did not store filled in; a folder that does not verify is quarantined.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from dgx import runs
from dgx.data.base import Bundle
from dgx.data.released import for_profile
from dgx.models import build_model
from dgx.profiles import get_profile
from dgx.runs import RESULT_FIELDS, SELECTION_FIELDS, TrainResult
from dgx.scoring import predict, selection_numbers, selection_splits
from dgx.spec import TrainConfig


def device_of(device: str) -> torch.device:
    """``auto``: CUDA where torch sees it, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def save_groups(run_dir: Path, domains: dict) -> None:
    """The scored splits' subgroup keys next to ``scores.npz``, in the same image order (local only)."""
    keys = {name: split.groups for name, split in domains.items() if split.groups}
    if keys:
        runs.save_groups(Path(run_dir) / runs.GROUPS, keys)


def stored_result(run_dir: Path, data: Bundle, cfg: TrainConfig, device: str = "auto") -> TrainResult | None:
    """The run folder's finished result when it verifies; a folder that does not is quarantined (None)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / runs.RESULT).exists():
        return None
    stored, problems = runs.verify(run_dir)
    if not problems:
        if not (run_dir / runs.GROUPS).exists():  # a run from before subgroup keys were stored
            save_groups(run_dir, {data.source: data.test, **data.targets})
        if any(k not in stored for k in SELECTION_FIELDS):  # a run from before the selection rules' numbers
            stored = _backfill_selection(run_dir, data, cfg, device_of(device), stored)
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
    scores = {name: predict(model, split, dev, profile) for name, split in splits.items()}
    stored = {**stored, **{k: math.nan for k in SELECTION_FIELDS}, **selection_numbers(splits, scores)}
    runs.atomic_write_text(run_dir / runs.RESULT, json.dumps(stored, indent=1))
    return stored


__all__ = ["stored_result", "save_groups", "device_of"]
