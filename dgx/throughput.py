"""Measured training throughput: the table ``bench/gpu_check.py --table`` writes and ``dgx reproduce`` reads.

A table is one JSON file::

    {"measured": "2026-12-03T10:00:00+00:00", "device": "NVIDIA H200", "torch": "2.9.0",
     "batch": 16, "image_size": 224, "model": "resnet50",
     "img_s": {"erm": {"1": 666, "4": 2400}, "rrr": {"1": 142}},
     "source": "bench/gpu_check.py"}

``img_s[method]["1"]`` is one trial's training images per second; ``img_s[method]["K"]`` (K > 1) the
aggregate images per second of K trials packed as one network (dgx/pack.py), K × batch × steps / s.
The cost model of ``dgx reproduce --dry-run`` divides images by these rates. The committed
baseline is ``sweeps/throughput/h200.json``.

No torch here: ``dgx reproduce`` checks the file before its slow imports, and the benchmark writes
it with :func:`write_table`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from dgx.config import sweeps_dir
from dgx.errors import DgxError

BATCH = 16  # the paper's batch size, at which dgx reproduce trains and the table must be measured
REQUIRED = ("measured", "device", "batch", "img_s")
DEFAULT_NAME = "h200.json"  # under sweeps/throughput/
FIX = "bench/gpu_check.py --table FILE writes one (see sweeps/throughput/h200.json for the format)"


@dataclass(frozen=True)
class ThroughputTable:
    path: Path
    measured: str  # ISO date or date-time of the measurement
    device: str  # torch.cuda.get_device_name() of the machine it was measured on
    batch: int
    img_s: dict[str, dict[int, float]]  # method -> K -> aggregate img/s (K = 1: one trial alone)
    source: str = ""

    def single(self, method: str) -> float:
        """One trial's img/s; a DgxError naming the file when the method was not measured."""
        rates = self.img_s.get(method)
        if not rates or 1 not in rates:
            raise DgxError(f"throughput table {self.path} has no img/s for {method!r} (img_s.{method}.\"1\"); "
                           f"add it, or pass --throughput a table that has it; {FIX}")
        return rates[1]

    def packed(self, method: str) -> dict[int, float]:
        """The measured packed rates K -> aggregate img/s, K > 1 (empty when packing was not measured)."""
        return {k: v for k, v in self.img_s.get(method, {}).items() if k > 1}

    def summary(self) -> str:
        """``erm 666, rrr 142 img/s`` (one trial each)."""
        return ", ".join(f"{m} {r[1]:g}" for m, r in self.img_s.items() if 1 in r)


def default_table_path() -> Path:
    """``sweeps/throughput/h200.json`` in the sweeps folder (``$DGX_SWEEPS_DIR`` or the repository's)."""
    return sweeps_dir() / "throughput" / DEFAULT_NAME


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)


def load_table(path: str | Path | None = None) -> ThroughputTable:
    """The table at ``path`` (default: :func:`default_table_path`), checked; a one-line DgxError naming the
    file and the fix when it is missing, not JSON, lacks a key or holds a non-positive number."""
    path = Path(path) if path is not None else default_table_path()
    if not path.is_file():
        raise DgxError(f"throughput table {path} does not exist{' (it is a folder)' if path.is_dir() else ''}; "
                       f"pass --throughput a measured table, or leave --throughput out for "
                       f"sweeps/throughput/{DEFAULT_NAME}; {FIX}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DgxError(f"throughput table {path} is not readable JSON ({type(exc).__name__}: {exc}); {FIX}") from None
    return parse_table(raw, path)


def parse_table(raw: object, path: Path) -> ThroughputTable:
    """A table's JSON value, checked (see :func:`load_table`)."""
    def bad(what: str) -> DgxError:
        return DgxError(f"throughput table {path}: {what}; {FIX}")

    if not isinstance(raw, dict):
        raise bad(f"it must hold a JSON object with {', '.join(REQUIRED)}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise bad(f"it lacks {', '.join(map(repr, missing))}; it needs {', '.join(REQUIRED)}")
    if raw["batch"] != BATCH or isinstance(raw["batch"], bool):
        raise bad(f"it was measured at batch {raw['batch']!r}, but dgx reproduce trains at batch {BATCH}; "
                  f"measure at batch {BATCH}")
    if not isinstance(raw["img_s"], dict) or not raw["img_s"]:
        raise bad('img_s must map each method to {K: img/s}, e.g. {"erm": {"1": 666}}')
    img_s: dict[str, dict[int, float]] = {}
    for method, rates in raw["img_s"].items():
        if not isinstance(rates, dict) or not rates:
            raise bad(f'img_s.{method} must map K to img/s, e.g. {{"1": 142, "4": 480}}')
        img_s[method] = {}
        for k, value in rates.items():
            if not str(k).isdigit() or int(k) < 1:
                raise bad(f'img_s.{method} has key {k!r}; keys are pack sizes K = "1", "2", ...')
            if not _positive(value):
                raise bad(f'img_s.{method}."{k}" is {value!r}; img/s must be a positive number')
            img_s[method][int(k)] = float(value)
    return ThroughputTable(path, str(raw["measured"]), str(raw["device"]), BATCH, img_s, str(raw.get("source", "")))


def write_table(path: str | Path, *, measured: str, device: str, img_s: dict[str, dict], **extra) -> Path:
    """Check, then write a table atomically (a temporary file in the same folder, then ``os.replace``);
    ``extra`` keys (torch, image_size, model, source, ...) are stored as given."""
    path = Path(path)
    body = {"measured": measured, "device": device, "batch": BATCH, **extra,
            "img_s": {m: {str(k): float(v) for k, v in rates.items()} for m, rates in img_s.items()}}
    parse_table(body, path)
    from dgx.runs import atomic_write_text  # a temp file beside it, then a rename; the umask's permissions

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(body, indent=1) + "\n")
    return path


__all__ = ["ThroughputTable", "load_table", "parse_table", "write_table", "default_table_path", "BATCH"]
