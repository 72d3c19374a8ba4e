"""Read finished dgx trials out of an Optuna storage into a tidy table.

The Optuna storage is the database of record: every dgx training is one trial
whose user attrs say what was trained (method, mask, dataset, seed, phase) and
how it scored on every domain (``auroc``). Study names are free-form, so all
grouping here is done on those attrs, never on names.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter

import optuna
import pandas as pd
from optuna.trial import TrialState

from dgx.checks import storage_file
from dgx.errors import DgxError
from dgx.runs import OVERRIDDEN, TrialRecord
from dgx.storage import open_storage

log = logging.getLogger("dgx")

COLUMNS = ("study", "trial", "dataset", "method", "mask", "phase", "seed", "domain", "role", "auroc", "run_id",
           "profile", "val_auroc", "lam", "val_auroc_low", "val_shuffled_auroc", "val_swapped_auroc", "draw")

ORACLE = "oracle"  # the method name the tables give to trials of the oracle variant


def report_method(attrs: dict) -> str:
    """The method a trial is reported as: its own, or ``oracle`` for the oracle variant (ERM on the
    source with its shortcut decorrelated), which is a row of its own."""
    return ORACLE if attrs.get("variant") == ORACLE else str(attrs["method"])


def open_existing_storage(storage: str | optuna.storages.BaseStorage) -> tuple[optuna.storages.BaseStorage, str]:
    """The storage object plus a name for it in error messages; the URL forms are `dgx sweep`'s (journal:// too)."""
    if not isinstance(storage, str):
        return storage, type(storage).__name__
    # Opening a missing SQLite file would silently create an empty database,
    # which then reports "no studies" instead of the real mistake: a bad path.
    path = storage_file(storage)
    if path is not None and not path.exists():
        raise DgxError(f"Optuna storage file {str(path)!r} does not exist; check the --storage URL {storage!r}")
    return open_storage(storage), storage


def study_names(storage: optuna.storages.BaseStorage, label: str,
                study_prefix: str | tuple[str, ...] | None) -> list[str]:
    """The studies of ``storage`` that ``study_prefix`` chooses (a name prefix, or an override tag oHASH); all of
    them without one. A one-line DgxError when there are none (``label`` names the storage in it)."""
    names = sorted(optuna.get_all_study_names(storage))
    if not names:
        raise DgxError(f"Optuna storage {label} contains no studies; run `dgx sweep` first or check the storage URL")
    if study_prefix is None:
        return names
    if isinstance(study_prefix, str) and OVERRIDDEN.fullmatch(f"-{study_prefix}"):  # an override tag: oHASH
        chosen = [n for n in names if OVERRIDDEN.search(n) and OVERRIDDEN.search(n).group(0) == f"-{study_prefix}"]
    else:
        chosen = [n for n in names if n.startswith(study_prefix)]  # str.startswith takes a tuple too
    if not chosen:
        raise DgxError(
            f"no study name starts with {study_prefix!r} in {label}; available studies: {', '.join(names)}"
        )
    return chosen


def _complete_trials(store: optuna.storages.BaseStorage, names: list[str]):
    """(study, trial number, user attrs) of every COMPLETE trial of ``names``, in study then trial order.

    On an RDB storage the attrs the tables need are read in one query from
    Optuna's ``trial_user_attributes`` table: building 10,000 FrozenTrials
    through the storage API takes ~5 s, this takes a fraction of that. Any
    other storage (Journal, in-memory) goes through the public API.
    """
    if isinstance(store, optuna.storages.RDBStorage):
        try:
            yield from _complete_trials_sql(store, names)
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected schema: fall back to the public API
            log.debug("fast RDB read failed (%s); using the Optuna API", exc)
    for name in names:
        study = optuna.load_study(study_name=name, storage=store)
        # deepcopy=False: we only read attrs; copying every trial dominates the run time otherwise.
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            yield name, trial.number, trial.user_attrs


def _complete_trials_sql(store: optuna.storages.RDBStorage, names: list[str]):
    import sqlalchemy as sa  # sqlalchemy: only for an RDB storage (Optuna loaded it to open one)

    # The tables never read "config" (large); a trial from before "lam" was stored reads NaN there.
    wanted = set(TrialRecord.REQUIRED) | set(TrialRecord.SELECTION) | {"run_id", "variant", "profile", "draw"}
    query = sa.text(
        "SELECT s.study_name, t.number, a.key, a.value_json FROM trials t "
        "JOIN studies s ON s.study_id = t.study_id "
        "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "WHERE t.state = 'COMPLETE' ORDER BY s.study_name, t.number")
    chosen = set(names)
    trials: dict[tuple[str, int], dict] = {}
    with store.engine.connect() as conn:
        for study, number, key, value in conn.execute(query):
            if study not in chosen:
                continue
            attrs = trials.setdefault((study, number), {})
            if key in wanted:
                attrs[key] = json.loads(value)
    for (study, number), attrs in sorted(trials.items()):
        yield study, number, attrs


def _trial_rows(study: str, number: int, attrs: dict) -> list[tuple]:
    """One row per domain (source first, then targets in display order)."""
    missing = TrialRecord.missing(attrs)
    if missing:
        raise DgxError(
            f"trial #{number} of study {study!r} lacks user attrs {missing}; "
            "it was not written by `dgx sweep` — move it to another study or use --study-prefix to skip it"
        )
    if not isinstance(attrs["auroc"], dict):
        raise DgxError(f"trial #{number} of study {study!r} has a non-dict 'auroc' attr ({attrs['auroc']!r})")
    return record_rows(study, number, TrialRecord.from_attrs(attrs))


def record_rows(study: str, number: int, record: TrialRecord) -> list[tuple]:
    """A record as rows of the runs frame (:data:`COLUMNS`), the source first, then the targets."""
    method = report_method({"method": record.method, "variant": record.variant})
    rows = []
    for domain, role in record.domains():
        # A domain the trial should have been scored on but was not becomes
        # NaN, so the table shows the gap instead of quietly dropping it.
        value = record.auroc.get(domain)
        rows.append((study, number, record.dataset, method, record.mask, record.phase, record.seed, domain, role,
                     math.nan if value is None else float(value), record.run_id, record.profile,
                     float(record.val_auroc), record.lam, record.val_auroc_low, record.val_shuffled_auroc,
                     record.val_swapped_auroc,
                     math.nan if record.draw is None else float(record.draw)))
    return rows


def load_runs(
    storage: str | optuna.storages.BaseStorage,
    study_prefix: str | tuple[str, ...] | None = None,
    phase: str | None = "seeds",
) -> pd.DataFrame:
    """All COMPLETE dgx trials in ``storage`` as one row per (trial, domain).

    Columns: study, trial (trial number), dataset, method, mask, phase, seed,
    domain, role ("source" or "target"), auroc (test AUROC in [0, 1]; NaN when
    the trial has no score for a domain it lists). Rows are ordered by study,
    trial, then source before targets in the trial's ``targets`` order; table
    builders rely on that order to lay out domains.

    ``study_prefix`` keeps only studies whose name starts with it; ``phase``
    keeps only trials whose ``phase`` attr equals it (None keeps all). COMPLETE
    trials without a ``method`` attr are not dgx trials and are skipped.

    Raises DgxError for an empty storage, a prefix matching no study, or when
    no COMPLETE trial matches the phase.
    """
    store, label = open_existing_storage(storage)
    names = study_names(store, label, study_prefix)
    rows: list[tuple] = []
    other_phases: Counter[str] = Counter()
    foreign = 0
    for name, number, attrs in _complete_trials(store, names):
        if "method" not in attrs:
            foreign += 1
            continue
        if phase is not None and attrs.get("phase") != phase:
            other_phases[str(attrs.get("phase"))] += 1
            continue
        rows.extend(_trial_rows(name, number, attrs))
    if not rows:
        where = f"{len(names)} stud{'y' if len(names) == 1 else 'ies'} ({', '.join(names)})"
        wanted = "COMPLETE dgx trials" if phase is None else f"COMPLETE dgx trials with phase {phase!r}"
        msg = f"no {wanted} in {where}"
        if other_phases:
            found = ", ".join(f"{n} in phase {p!r}" for p, n in sorted(other_phases.items()))
            hint = sorted(other_phases, key=lambda p: -other_phases[p])[0]
            msg += f"; found {found} — use --phase {hint} (or phase={hint!r}) to report those"
        else:
            skipped = f" ({foreign} COMPLETE trials without dgx user attrs were skipped)" if foreign else ""
            msg += f"{skipped}; wait for `dgx sweep` to finish some trials or check the study prefix"
        raise DgxError(msg)
    df = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    return df.astype({"trial": "int64", "seed": "int64", "auroc": "float64", "val_auroc": "float64", "lam": "float64",
                      "val_auroc_low": "float64", "val_shuffled_auroc": "float64", "val_swapped_auroc": "float64",
                      "draw": "float64"})
