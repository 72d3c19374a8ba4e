"""``dgx report``: load the runs a :class:`ReportRequest` names (Optuna storage or W&B), filter them, and print a
table, per-run intervals or a subgroup table, or draw a figure: one small function per source and per mode."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dgx.config import Settings, get_settings
from dgx.errors import DgxError
from dgx.methods import BASELINE
from dgx.progress import say
from dgx.report import filter_runs, report, search_runs
from dgx.report.load import load_runs
from dgx.report.render import render
from dgx.report.request import ReportRequest
from dgx.report.run_files import read_groups, read_scores
from dgx.report.runci import run_ci_table
from dgx.report.wandb_source import load_wandb_runs
from dgx.runs import OVERRIDDEN, RESULT, atomic_write_text, run_dir
from dgx.storage import shown_url

log = logging.getLogger("dgx")


def run_report(request: ReportRequest) -> str:
    """The report's text for stdout: the table itself, or "wrote PATH" when it went to a file or a figure."""
    request.check()
    settings = get_settings()
    if request.source == "wandb":
        runs, search = _wandb_runs(request, settings), None
    else:
        runs, search = _storage_runs(request, settings)
    runs = filter_runs(runs, dataset=list(request.dataset) or None,
                       method=None if request.wide else list(request.method) or None, mask=list(request.mask) or None)
    _check_baseline(request.baseline, runs)
    if request.figure is not None:
        return _draw_figure(request, runs, settings.runs_dir)
    if request.by is not None:
        text = _subgroups(request, runs, settings.runs_dir)
    elif request.run_ci is not None:
        text = run_ci_table(runs, settings.runs_dir, request.run_ci, request.fmt)
    else:
        text = _table(request, runs, search)
    if request.source != "wandb":  # after the table: a bad input stays one error line
        missing_folders(runs, settings.runs_dir, request.storage or settings.default_storage())
    if request.out is None:
        return text
    write_atomic(request.out, text)
    return f"wrote {request.out}\n"


def _wandb_runs(request: ReportRequest, settings: Settings) -> pd.DataFrame:
    return load_wandb_runs(request.entity or settings.wandb_entity, request.project or settings.wandb_project,
                           study_prefix=request.study, phase=request.chosen_phase)


def _storage_runs(request: ReportRequest, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The runs of the storage, and for the seeds phase the searches behind them (what each selection rule
    picks there)."""
    url = request.storage or settings.default_storage()
    runs = load_runs(url, study_prefix=request.study, phase=request.chosen_phase)
    search = search_runs(url, request.study) if request.phase == "seeds" else None
    if request.study is None:
        runs, search = default_studies(runs, search, url)
    return runs, search


def _draw_figure(request: ReportRequest, runs: pd.DataFrame, runs_dir: Path) -> str:
    from dgx.report.figures import draw  # sklearn (matplotlib when drawing): only for --figure

    return f"wrote {draw(request.figure, runs, request.figure_path, runs_dir)}\n"


def _subgroups(request: ReportRequest, runs: pd.DataFrame, runs_dir: Path) -> str:
    if "run_id" in runs.columns:
        for run_id in dict.fromkeys(runs["run_id"]):  # a damaged file is one line, not a traceback
            read_scores(runs_dir, str(run_id))
            read_groups(runs_dir, str(run_id))
    from dgx.report.subgroups import subgroup_tables  # sklearn: only for --by

    return render(subgroup_tables(runs, runs_dir, request.by), request.fmt)


def _table(request: ReportRequest, runs: pd.DataFrame, search: pd.DataFrame | None) -> str:
    """The paper-shaped table (--table), with the selection rules' picks under a seeds-phase one."""
    shown = request.method[0] if request.method and request.wide else None
    return report(None, shape=request.table, fmt=request.fmt, method=shown, baseline=request.baseline,
                  test=request.paired_test, runs=runs, search=search)


def default_studies(runs, search, url: str):
    """Without --study: the studies a plain `dgx sweep`/`dgx reproduce` names (no ``-oHASH`` of overridden
    settings), saying on stderr which others the storage holds and how to report them."""
    names = list(dict.fromkeys(runs["study"]))
    plain = [n for n in names if not OVERRIDDEN.search(n)]
    if not plain or len(plain) == len(names):
        return runs, search
    tags = sorted({OVERRIDDEN.search(n).group(0)[1:] for n in names if n not in plain})
    say(f"reporting the {len(plain)} default stud{'y' if len(plain) == 1 else 'ies'} of {shown_url(url)}; "
                  f"{len(names) - len(plain)} more ran with settings overridden by flags, tagged "
                  f"{', '.join(tags)} in their names: `dgx report --study {tags[0]}` reports those of one tag")
    keep = runs[runs["study"].isin(plain)].reset_index(drop=True)
    if search is not None:
        search = search[~search["study"].map(lambda n: bool(OVERRIDDEN.search(n)))].reset_index(drop=True)
    return keep, search


def missing_folders(runs, runs_dir: Path, url: str) -> list[str]:
    """Trials (study#number) whose run folder is gone or unfinished, said on stderr: the table still shows their
    numbers (the storage holds them), but anything read from the folder cannot be."""
    if "run_id" not in runs.columns:
        return []
    trials = runs.drop_duplicates(["study", "trial"])
    gone = [f"{r.study}#{r.trial}" for r in trials.itertuples()
            if isinstance(r.run_id, str) and r.run_id and not (run_dir(runs_dir, r.run_id) / RESULT).exists()]
    if gone:
        shown = ", ".join(gone[:6]) + (f" and {len(gone) - 6} more" if len(gone) > 6 else "")
        log.warning(f"{len(gone)} trial(s) have no finished run folder in {runs_dir} ({shown}); their AUROCs "
                      f"come from the storage, but per-run intervals, ROC curves and subgroups need the folder: "
                      f"`dgx doctor --storage {shown_url(url)} --fix` trains them again")
    return gone


def _check_baseline(baseline: str | None, runs) -> None:
    """A baseline the chosen runs have: else every Δ would be empty."""
    if not baseline or baseline == "none":
        return
    if baseline == BASELINE and not (runs["method"] == BASELINE).any():
        raise DgxError("--baseline erm: these runs have no ERM trials to compare with; sweep with the baseline "
                       "(the default, not --no-baseline), pick studies that include it with --study, or use "
                       "--baseline mask:NAME")
    if baseline.startswith("mask:"):
        wanted = baseline[len("mask:"):]
        masked = sorted(set(runs.loc[runs["mask"] != "none", "mask"]))
        if wanted not in masked:
            raise DgxError(f"--baseline {baseline}: no run with mask {wanted} among these runs, so no cell could be "
                           f"compared; choose from: {', '.join('mask:' + m for m in masked) or '(no masked runs)'}, "
                           "or use --baseline erm")


def write_atomic(path: Path, text: str) -> None:
    """``text`` to ``path`` (its folder made), atomically; a one-line DgxError where it cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as exc:
        raise DgxError(f"cannot write {path}: {exc.strerror}; pass --out to a writable location") from None


__all__ = ["run_report"]
