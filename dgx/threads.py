"""CPU threads: each training process takes its fair share of the machine's cores.

Two processes that each run torch's default thread count (every core) on a
2-core machine oversubscribe it: measured, a training ran ~40x slower than with
one thread each. So every dgx training registers itself in a per-user folder
on this machine (one empty file named by its PID) and sets torch's threads to

    max(1, cores // trainings running here)

when it starts and again before every epoch, as others come and go. A dead
process's file is ignored (and removed) because its PID no longer exists.
``DGX_THREADS=N`` (environment or ``.env``) pins N threads instead; ``cores``
is the CPUs this process may run on (``os.sched_getaffinity``), which honours
a container's or SLURM's CPU set.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def registry() -> Path:
    """The folder where this machine's running dgx trainings announce themselves (one per user)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"dgx-trainings-{uid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def running() -> int:
    """dgx trainings running on this machine now (this one included once it registered)."""
    folder = registry()
    count = 0
    for entry in folder.glob("*") if folder.is_dir() else ():
        pid = int(entry.name) if entry.name.isdigit() else 0
        if pid and _alive(pid):
            count += 1
        elif pid:
            with contextlib.suppress(OSError):
                entry.unlink()
    return count


def fair_share(pinned: int = 0) -> int:
    """The threads one training should use: ``pinned`` if set, else max(1, cores // trainings running here)."""
    if pinned > 0:
        return pinned
    return max(1, cores() // max(1, running()))


class Share:
    """A training's place in the registry; :meth:`apply` sets torch's threads to its current share."""

    def __init__(self, pinned: int = 0) -> None:
        self.pinned, self.threads = pinned, 0
        self.path = registry() / str(os.getpid())

    def apply(self) -> int:
        import torch  # torch: only in a training process, which has it loaded

        threads = fair_share(self.pinned)
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads


_PINNED = 0  # set by `dgx worker --threads N` for the trainings of this process


def pin(threads: int) -> None:
    """Every later training of this process uses ``threads`` (0: its fair share again)."""
    global _PINNED
    _PINNED = max(0, int(threads))


@contextlib.contextmanager
def training_share(pinned: int | None = None) -> Iterator[Share]:
    """Register this process as a running training for the duration of the block, with its share applied.
    ``pinned``: threads to use regardless (default: ``dgx worker --threads``, else ``DGX_THREADS``, else 0)."""
    if pinned is None:
        from dgx.config import get_settings  # pydantic settings: read on first use, not on import

        pinned = _PINNED or get_settings().threads
    share = Share(pinned)
    nested = share.path.exists()  # a pack or a sweep already registered this process
    try:
        share.path.parent.mkdir(parents=True, exist_ok=True)
        share.path.touch()
    except OSError:  # an unwritable temp folder: train with the share as if alone
        pass
    try:
        share.apply()
        yield share
    finally:
        if not nested:
            with contextlib.suppress(OSError):
                share.path.unlink()


__all__ = ["cores", "fair_share", "pin", "running", "training_share", "Share"]
