"""W&B as a report source: the same runs frame as :func:`dgx.report.load_runs`, from the public API.

Each dgx trial is one W&B run: ``group`` = the experiment (its search study's name,
shared by the seeds phase), ``job_type`` = phase, name ``<study>#<trial number>``, ``config`` = the training config (method, mask,
dataset, seed), ``summary`` = ``auroc/<domain>`` per domain plus ``source`` and
``targets``. Only finished runs count (failed trials finish with exit code 1,
state "failed"). The API pages through runs lazily; a rate-limited page
(HTTP 429) or a transient error is retried with exponential backoff.
"""

from __future__ import annotations

import logging
import netrc
import os
import time
from collections.abc import Callable, Iterator

import pandas as pd

from dgx.config import get_settings
from dgx.errors import DgxError
from dgx.report.load import COLUMNS, record_rows
from dgx.runs import TrialRecord

log = logging.getLogger("dgx")

PER_PAGE = 500
RETRIES = 6


def _transient(exc: BaseException) -> bool:
    """A busy server (rate limit, 502/503) is worth waiting for; an unreachable one is not (it fails in one
    line at once, rather than after a minute of retries)."""
    text = f"{type(exc).__name__} {exc}"
    return any(s in text for s in ("429", "rate limit", "Rate limit", "502", "503"))


def with_retry(fn: Callable[[], object], what: str, sleep: Callable[[float], None] = time.sleep):
    """Call ``fn``; on a transient error wait 1, 2, 4, ... s and try again (at most RETRIES times)."""
    for attempt in range(RETRIES):
        try:
            return fn()
        except StopIteration:
            raise
        except Exception as exc:  # noqa: BLE001 - the API raises requests/GraphQL/wandb errors alike
            if not _transient(exc) or attempt == RETRIES - 1:
                raise DgxError(f"W&B API error while {what}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
            wait = 2.0 ** attempt
            log.warning("W&B API busy while %s (%s); retrying in %.0f s", what, type(exc).__name__, wait)
            sleep(wait)
    raise AssertionError("unreachable")


def _iter_runs(api, path: str, filters: dict, sleep) -> Iterator:
    runs = with_retry(lambda: api.runs(path, filters=filters, per_page=PER_PAGE), f"listing runs of {path}", sleep)
    it = iter(runs)
    while True:  # each next() may fetch a page: retry that page, not the whole listing
        try:
            run = with_retry(lambda: next(it), f"reading runs of {path}", sleep)
        except StopIteration:
            return
        yield run


def _connect(sleep: Callable[[float], None]):
    """The W&B public API, or a one-line DgxError when there is no key or no connection (within ~10 s)."""
    key = get_settings().wandb_api_key or os.environ.get("WANDB_API_KEY", "")
    if not key:
        try:
            key = (netrc.netrc().authenticators("api.wandb.ai") or ("", "", ""))[2] or ""
        except (OSError, netrc.NetrcParseError):
            key = ""
    if not key:
        raise DgxError("--source wandb needs a W&B API key: set WANDB_API_KEY in the environment or .env (or run "
                       "`wandb login`); to report from the local runs, use --source optuna")
    os.environ.setdefault("WANDB_API_KEY", key)
    import wandb  # wandb: only to reach the live API (tests pass their own api)

    return with_retry(lambda: wandb.Api(timeout=5), "connecting to W&B (check the network, or use --source optuna)",
                      sleep)


def _reused_seed_zero(seeds: list[tuple], searched: list[tuple]) -> list[tuple]:
    """Seed 0 of each seeds study that has no W&B run of its own: the search run it reused.

    The seeds phase retrains the selected search point on seeds 0..N-1; seed 0
    is that very training (same run folder), so it is logged once, as a search
    run. It is the search run of the study the seeds study extends
    (``NAME.seeds`` of ``NAME``) whose config equals the seeds runs' but for
    the seed.
    """
    def key(record: TrialRecord) -> str:
        return repr(sorted((k, repr(v)) for k, v in record.config.items() if k != "seed"))

    out = []
    for study in dict.fromkeys(s for s, _, _ in seeds):
        mine = [r for s, _, r in seeds if s == study]
        if any(r.seed == 0 for r in mine) or not study.endswith(".seeds"):
            continue
        wanted = {key(r) for r in mine}
        search = study[: -len(".seeds")]
        match = [(t, r) for s, t, r in searched if s == search and r.seed == 0 and key(r) in wanted]
        if match:
            trial, record = min(match, key=lambda m: m[0])
            record.phase = "seeds"
            out.append((search, trial, record))  # under its own study and trial number: names stay unique
    return out


def load_wandb_runs(entity: str, project: str, study_prefix: str | tuple[str, ...] | None = None,
                    phase: str | None = "seeds", api=None, sleep: Callable[[float], None] = time.sleep) -> pd.DataFrame:
    """Finished dgx runs of ``entity/project`` as the runs frame (columns of :data:`COLUMNS`)."""
    if not project:
        raise DgxError("--source wandb needs --project (or WANDB_PROJECT)")
    if api is None:
        api = _connect(sleep)
    path = f"{entity}/{project}" if entity else project
    filters: dict = {"state": "finished"}
    if phase is not None:
        # Seed 0 of a seeds phase is the selected search training, logged once under job type "search".
        filters["jobType"] = {"$in": ["seeds", "search"]} if phase == "seeds" else phase
    rows, searched = [], []
    prefixes = (study_prefix,) if isinstance(study_prefix, str) else study_prefix
    for run in _iter_runs(api, path, filters, sleep):
        if getattr(run, "state", "finished") != "finished":
            continue
        name, _, number = run.name.rpartition("#")
        study = name or run.group or ""  # the group is the experiment; the run's name says search or seeds study
        if prefixes and not study.startswith(tuple(prefixes)):
            continue
        summary, config = dict(run.summary), dict(run.config)
        if "source" not in summary or "method" not in config:
            continue  # not a dgx trial run (or one from before dgx wrote sources)
        trial = int(number) if number.isdigit() else -1
        record = TrialRecord.from_wandb(config, summary, str(run.job_type))
        if phase == "seeds" and run.job_type == "search":
            searched.append((study, trial, record))
        elif phase is None or run.job_type == phase:
            rows.append((study, trial, record))
    if phase == "seeds":
        rows += _reused_seed_zero(rows, searched)
    rows = [row for study, trial, record in rows for row in record_rows(study, trial, record)]
    if not rows:
        raise DgxError(f"no finished dgx runs in W&B project {path}" + (f" with phase {phase!r}" if phase else "")
                       + (f" and group starting with {study_prefix!r}" if study_prefix else "")
                       + "; check --entity/--project, or sync offline runs with `wandb sync`")
    df = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    df = df.sort_values(["study", "trial"], kind="stable").reset_index(drop=True)
    return df.astype({"trial": "int64", "seed": "int64", "auroc": "float64", "val_auroc": "float64"})
