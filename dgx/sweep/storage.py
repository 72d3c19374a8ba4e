"""Optuna storages: SQLite by default, any Optuna URL otherwise.

- ``sqlite:///path.db``: the embedded default, single process.
- ``journal:///path.journal``: Optuna's JournalStorage on a file (several local workers).
- ``postgresql://...`` / ``mysql://...``: RDBStorage for many machines.

Every storage gets dgx's worker heartbeats (:mod:`dgx.sweep.queue`), so a trial
whose process died is marked failed and retried by a live worker, resuming from
its last epoch checkpoint. Optuna's own heartbeat is not used: it exists only
for RDB storages and only inside ``study.optimize``.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna

from dgx.errors import DgxError


def _writable_file(path: Path, url: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DgxError(f"cannot create the folder of storage {url!r}: {exc.strerror}; pass --storage or set DGX_STORAGE to a writable location") from None
    probe = path if path.exists() else path.parent
    if not os.access(probe, os.W_OK):
        raise DgxError(f"storage {url!r} is not writable ({probe}); pass --storage or set DGX_STORAGE to a writable location")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage behind ``url``, with one-line errors."""
    if url.startswith("journal:///"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:///") - 1 :])
        _writable_file(path, url)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        _writable_file(Path(url[len("sqlite:///") :].split("?", 1)[0]), url)
    elif "://" not in url:
        raise DgxError(f"storage {shown_url(url)!r} is not a URL; use sqlite:///runs/dgx.db, journal:///path/file.journal or postgresql://user@host/db")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {})
    except Exception as exc:  # drivers raise many types; the first line says what is wrong
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DgxError(f"cannot open storage {shown_url(url)!r}: {first}") from None


def shown_url(url: str) -> str:
    """A storage URL fit for logs: any password replaced by ``***`` (postgresql://dgx:***@db/dgx)."""
    import re

    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)
