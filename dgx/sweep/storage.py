"""Optuna storages: SQLite by default, any Optuna URL otherwise.

- ``sqlite:///path.db``: the embedded default, single process.
- ``journal:///path.journal``: Optuna's JournalStorage on a file (several local workers).
- ``postgresql://...`` / ``mysql://...``: RDBStorage for many machines.

RDB storages get heartbeats, so a trial whose process died is marked failed
(and retried by the sweep, resuming from its last epoch checkpoint).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import optuna

from dgx.errors import DgxError

HEARTBEAT_S = 30  # how often a running trial proves it is alive
GRACE_S = 120  # after this long without a heartbeat, a trial is considered dead


def _writable_file(path: Path, url: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DgxError(f"cannot create the folder of storage {url!r}: {exc.strerror}; pass --storage or set DGX_STORAGE to a writable location") from None
    probe = path if path.exists() else path.parent
    if not os.access(probe, os.W_OK):
        raise DgxError(f"storage {url!r} is not writable ({probe}); pass --storage or set DGX_STORAGE to a writable location")


def open_storage(url: str, heartbeat: bool = True) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage behind ``url``, with one-line errors."""
    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:///") - 1 :])
        _writable_file(path, url)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        _writable_file(Path(url[len("sqlite:///") :].split("?", 1)[0]), url)
    elif "://" not in url:
        raise DgxError(f"storage {url!r} is not a URL; use sqlite:///runs/dgx.db, journal:///path/file.journal or postgresql://user@host/db")
    kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S} if heartbeat else {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat is stable in practice
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {}, **kwargs)
    except Exception as exc:  # drivers raise many types; the first line says what is wrong
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DgxError(f"cannot open storage {url!r}: {first}") from None
