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
import re
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend

from dgx.checks import check_folder, check_storage_url, storage_file
from dgx.errors import DgxError
from dgx.runs import STORAGES, atomic_write_text


def check_storage(url: str) -> None:
    """Whether ``url`` can be opened for writing, without creating anything: a URL, and for a file storage
    a file (existing or not) in a folder dgx can create and write."""
    check_storage_url(url)
    path = storage_file(url)
    if path is None:
        return
    check_folder(path.parent, f"storage {url!r}: its folder",
                 "pass --storage or set DGX_STORAGE to a file in a writable folder")
    if path.is_dir():
        raise DgxError(f"storage {url!r} names a folder ({path}); pass --storage or set DGX_STORAGE to a file in it")
    if path.exists() and not os.access(path, os.W_OK):
        raise DgxError(f"storage {url!r} is not writable ({path}); pass --storage or set DGX_STORAGE to a writable location")


def _writable_file(path: Path, url: str) -> None:
    check_storage(url)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DgxError(f"cannot create the folder of storage {url!r}: {exc.strerror}; pass --storage or set DGX_STORAGE to a writable location") from None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage behind ``url``, with one-line errors."""
    if url.startswith("journal:///"):
        path = Path(url[len("journal:///") - 1 :])
        _writable_file(path, url)
        try:  # replays the file: a foreign or damaged one fails here
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except Exception as exc:  # noqa: BLE001 - json, Unicode and Optuna errors all mean the same
            raise DgxError(f"storage {url!r}: {path} is not an Optuna journal file ({type(exc).__name__}); check the "
                           "--storage URL (or DGX_STORAGE)") from None
    if url.startswith("sqlite:///"):
        _writable_file(Path(url[len("sqlite:///") :].split("?", 1)[0]), url)
    elif "://" not in url:
        raise DgxError(f"storage {shown_url(url)!r} is not a URL; use sqlite:///runs/dgx.db, journal:///path/file.journal or postgresql://user@host/db")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else {})
    except Exception as exc:  # drivers raise many types; the first line says what is wrong
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DgxError(f"cannot open storage {shown_url(url)!r}: {first}; check the --storage URL (or DGX_STORAGE)") from None


def shown_url(url: str) -> str:
    """A storage URL fit for logs: any password replaced by ``***`` (postgresql://dgx:***@db/dgx)."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def canonical_url(url: str) -> str:
    """``url`` as the runs folder's registry keeps it: a file storage by its absolute path, no password."""
    path = storage_file(url)
    if path is not None:  # sqlite:////abs/path.db, journal:///abs/path.journal
        return f"{'journal://' if url.startswith('journal:') else 'sqlite:///'}{path.resolve()}"
    return shown_url(url)


_REMEMBERED: set[tuple[str, str]] = set()


def remember_storage(runs_dir: Path, url: str) -> None:
    """Note in ``runs_dir`` that trials of ``url`` name folders here (once per process), so that `dgx doctor`
    on any one storage knows the others that share the folder (:func:`known_storages`)."""
    key = (str(Path(runs_dir).resolve()), canonical_url(url))
    if key in _REMEMBERED:
        return
    _REMEMBERED.add(key)
    known = known_storages(runs_dir)
    if key[1] not in known:
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(runs_dir) / STORAGES, "".join(f"{u}\n" for u in [*known, key[1]]))


def known_storages(runs_dir: Path) -> list[str]:
    """Every storage whose trials name folders of ``runs_dir``: its registry, and the SQLite and Journal files
    lying in it (from before the registry, or copied in)."""
    root = Path(runs_dir)
    path = root / STORAGES
    listed = [line.strip() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    found = [f"sqlite:///{p.resolve()}" for p in sorted(root.glob("*.db"))]
    found += [f"journal://{p.resolve()}" for p in sorted(root.glob("*.journal"))]
    return list(dict.fromkeys(listed + found))
