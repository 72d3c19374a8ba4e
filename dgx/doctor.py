"""``dgx doctor``: find what a crash, a full disk or a hand edit left behind, and repair it with ``--fix``.

It reads a runs folder and, when given, an Optuna storage:

- **damaged runs**: a finished folder whose ``result.json`` no longer parses or
  whose sealed files changed size or hash; an unfinished one whose ``last.pt``
  cannot be loaded. Fix: move the folder to ``<runs_dir>/quarantine/`` (the
  next sweep or worker trains it again).
- **stray temporary files**: ``.NAME.<pid>.<hex>.tmp*`` left by a write that
  was killed (a normal failure removes its own). Fix: delete them.
- **orphaned run folders** (with a storage): finished folders no trial names,
  in this storage or in any other that trains in the same folder: every sweep
  and worker adds its storage to ``<runs_dir>/storages.txt`` (passwords
  removed), and SQLite/Journal files lying in the folder count too. While one
  of them cannot be read, no folder is called an orphan. Fix: move them to
  quarantine (never deleted: ``dgx train`` runs are orphans too, and a folder
  still training is never touched).
- **trials with no folder** (with a storage): COMPLETE trials whose run folder
  is missing or damaged; their numbers are still in the storage, but ROC
  curves, per-run intervals and subgroups need the folder. Fix: train the
  trial's recorded config again into the same folder (deterministic on CPU).
- **WAITING duplicates** (with a storage): queued trials whose grid point
  another trial owns. Fix: close them as duplicates, as a worker would.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dgx import runs
from dgx.checks import storage_file
from dgx.errors import DgxError
from dgx.spec import TrainConfig

_TMP = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp")


@dataclass
class Finding:
    kind: str  # damaged | temporary | orphan | no-folder | waiting-duplicate
    where: str  # a path, or study#trial
    detail: str
    fixed: str = ""  # what --fix did


def _folders(runs_dir: Path) -> list[Path]:
    root = Path(runs_dir) / runs.RUNS
    return sorted(p for p in root.iterdir() if p.is_dir() and not _TMP.match(p.name)) if root.is_dir() else []


def _damage(folder: Path) -> str | None:
    """Why ``folder`` cannot be trusted, or None."""
    if (folder / runs.RESULT).exists():
        problems = runs.verify(folder)[1]
        return problems[0] if problems else None
    if (folder / runs.LAST).exists():
        import torch  # optuna / torch: only for the checks that need them

        try:
            torch.load(folder / runs.LAST, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - anything that stops a resume
            return f"{runs.LAST} cannot be loaded ({type(exc).__name__})"
    return None


def scan_runs(runs_dir: Path, fix: bool = False) -> list[Finding]:
    """Damaged folders and stray temporary files under ``runs_dir``."""
    out = []
    root = Path(runs_dir) / runs.RUNS
    for tmp in sorted(root.rglob(".*.tmp*")) if root.is_dir() else []:
        if _TMP.match(tmp.name):
            finding = Finding("temporary", str(tmp), "left by an interrupted write")
            if fix:
                shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
                finding.fixed = "deleted"
            out.append(finding)
    for folder in _folders(runs_dir):
        why = _damage(folder)
        if why:
            finding = Finding("damaged", str(folder), why)
            if fix:
                finding.fixed = f"moved to {runs.quarantine(folder, why)}"
            out.append(finding)
    return out


def scan_storage(runs_dir: Path, storage: str, fix: bool = False, retrain=None) -> list[Finding]:
    """Orphans, trials with no folder and WAITING duplicates of every study in ``storage``.

    ``retrain(trial_attrs, folder)`` recreates a COMPLETE trial's folder under ``--fix``.
    """
    import optuna  # optuna / torch: only for the checks that need them
    from optuna.trial import TrialState

    from dgx.report.load import open_existing_storage  # optuna / torch: only for the checks that need them
    # optuna / torch: only for the checks that need them
    from dgx.sweep.queue import _params_of, close_waiting_duplicates, owners, point_key

    store, label = open_existing_storage(storage)
    out, named = [], set()
    for name in sorted(optuna.get_all_study_names(store)):
        study = optuna.load_study(study_name=name, storage=store)
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            run_id = t.user_attrs.get("run_id")
            if run_id:
                named.add(str(run_id))
            if t.state != TrialState.COMPLETE or not run_id or "config" not in t.user_attrs:
                continue
            folder = runs.run_dir(runs_dir, str(run_id))
            missing = not (folder / runs.RESULT).exists()
            if missing or _damage(folder):
                finding = Finding("no-folder", f"{name}#{t.number}",
                                  f"run folder {folder} is {'missing' if missing else 'damaged'}")
                if fix and retrain is not None:
                    if not missing:
                        runs.quarantine(folder, "damaged")
                    retrain(t.user_attrs, folder)
                    finding.fixed = f"trained again into {folder}"
                out.append(finding)
        owned = owners(trials)
        waiting = [t for t in trials if t.state == TrialState.WAITING
                   and (o := owned.get(point_key(_params_of(t)))) is not None and o.number != t.number]
        for t in waiting:
            out.append(Finding("waiting-duplicate", f"{name}#{t.number}", "its grid point has another trial"))
        if fix and waiting:
            closed = close_waiting_duplicates(study)
            for f in out[-len(waiting):]:
                f.fixed = f"closed as duplicate ({closed} in {name})"
    others, unread = _other_storages(runs_dir, storage)
    if unread:  # a folder no storage we could read names may still belong to the one we could not
        out += [Finding("unreadable-storage", url, f"{why}; orphans are not decided until it can be read (it is "
                        f"listed in {Path(runs_dir) / runs.STORAGES}: fix its URL there, or remove the line if "
                        "that storage is gone)") for url, why in unread]
        return out
    out += _orphans(runs_dir, named | others, label, fix)
    return out


def _other_storages(runs_dir: Path, storage: str) -> tuple[set[str], list[tuple[str, str]]]:
    """The run ids named by every other storage known to share ``runs_dir`` (its registry, the SQLite and
    Journal files in it), and those of them that could not be read (URL, why)."""
    import optuna  # optuna / torch: only for the checks that need them

    from dgx.report.load import open_existing_storage  # optuna / torch: only for the checks that need them
    from dgx.storage import canonical_url, known_storages

    named, unread = set(), []
    for url in known_storages(runs_dir):
        if url == canonical_url(storage) or ((path := storage_file(url)) is not None and not path.exists()):
            continue  # this storage; a file storage deleted since names nothing
        try:
            store, _ = open_existing_storage(url)
            for name in optuna.get_all_study_names(store):
                for t in optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False):
                    if t.user_attrs.get("run_id"):
                        named.add(str(t.user_attrs["run_id"]))
        except Exception as exc:  # noqa: BLE001 - unreachable server, foreign file: say which and why
            unread.append((url, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    return named, unread


def _orphans(runs_dir: Path, named: set[str], label: str, fix: bool) -> list[Finding]:
    """Finished folders (a minute old: a trial records its run id just after result.json is written) that no
    trial of any known storage names."""
    out = []
    for folder in _folders(runs_dir):
        result = folder / runs.RESULT
        if folder.name not in named and result.exists() and time.time() - result.stat().st_mtime > 60:
            finding = Finding("orphan", str(folder), f"no trial in {label} or the other storages that train in "
                              f"{runs_dir} ({runs.STORAGES} and the storage files there) names it")
            if fix:
                finding.fixed = f"moved to {runs.quarantine(folder, 'orphaned')}"
            out.append(finding)
    return out


def retrain_trial(attrs: dict, folder: Path, device: str = "auto") -> None:
    """Train a trial's recorded config again into ``folder`` (the same run, so the same hash)."""
    # torch and the data: only when a trial is retrained
    from dgx.resolve import load_data
    from dgx.train import train

    cfg = TrainConfig.from_dict(attrs["config"])
    bundle = load_data(cfg)
    if cfg.run_id(bundle.fingerprint) != folder.name:
        raise DgxError(f"the data for {folder.name} changed since it was trained (another generator or cache); "
                       "rerun its sweep under a new --study instead")
    train(cfg, bundle, folder, device=device, progress=False)


__all__ = ["Finding", "scan_runs", "scan_storage", "retrain_trial"]
