"""Read what an offline W&B run holds (the ``run-<id>.wandb`` file `wandb sync` would upload).

The file is W&B's record log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then 32 KiB blocks of
chunks (CRC32 4 bytes, length 2, type 1: full, first, middle, last), each record a ``wandb_internal_pb2.Record``.
Tests read it to check what a run sent: its group, job type, tags, host, config, summary and history.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

HEADER = 7
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    out, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            out.append(pending + chunk)
            pending = b""
        else:  # zero padding at the end of the file
            break
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # newer W&B writes nested_key ("val/auroc" as one part)


@dataclass
class OfflineRun:
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    host: str = ""
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # define_metric: name -> step metric


def read_offline_run(folder: Path) -> OfflineRun:
    """The run in ``folder`` (``<runs>/wandb/offline-run-<time>-<id>``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(folder).glob("run-*.wandb")
    run = OfflineRun()
    for blob in _records(path):
        record = pb.Record()
        record.ParseFromString(blob)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.group, run.job_type, run.name, run.tags, run.host = r.run_group, r.job_type, r.display_name, \
                list(r.tags), r.host
            run.config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "metric":
            m = record.metric
            run.metrics[m.name or m.glob_name] = m.step_metric
    return run


def offline_runs(runs_dir: Path) -> list[OfflineRun]:
    return [read_offline_run(p) for p in sorted((Path(runs_dir) / "wandb").glob("offline-run-*"))]
