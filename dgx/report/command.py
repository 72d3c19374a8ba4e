"""``dgx report`` as one function: load the runs (Optuna storage or W&B), filter them, render a table or a figure."""

from __future__ import annotations

import logging
from pathlib import Path

from dgx.checks import check_choice, check_name, check_out_file
from dgx.config import get_settings
from dgx.errors import DgxError, unknown_choice

log = logging.getLogger("dgx")

PHASES = ("seeds", "search", "all")
SOURCES = ("optuna", "wandb")
TESTS = ("t", "wilcoxon")
FIGURES = ("bars", "roc")
RUN_CIS = ("delong", "bootstrap")


def run_report(storage: str | None = None, study: str | None = None, phase: str = "seeds", table: str = "1",
               fmt: str = "markdown", out: Path | None = None, dataset: list[str] | None = None,
               method: list[str] | None = None, mask: list[str] | None = None, baseline: str | None = None,
               test: str | None = None, source: str = "optuna", entity: str | None = None, project: str | None = None,
               figure: str | None = None, run_ci: str | None = None, by: str | None = None) -> str:
    """The report's text for stdout: the table itself, or "wrote PATH" when it went to a file or a figure."""
    from dgx.report import filter_runs, search_runs
    from dgx.report import report as build_report
    from dgx.report.load import load_runs

    if test is not None and not baseline:
        raise DgxError(f"--test {test} compares cells with a baseline and there is none; add --baseline erm "
                       "(or mask:NAME), or drop --test")
    if baseline and (figure is not None or run_ci is not None):
        raise DgxError(f"--baseline has no effect on {'--figure' if figure is not None else '--run-ci'}; drop it, "
                       "or print the table with --baseline instead")
    if by is not None:
        from dgx.data.groups import KEYS

        if by not in KEYS:
            raise unknown_choice("--by", by, KEYS)
        clash = next((f"--{name}" for name, value in (("figure", figure), ("run-ci", run_ci), ("baseline", baseline))
                      if value is not None), "--table" if table != "1" else "--source wandb" if source == "wandb" else "")
        if clash:
            raise DgxError(f"--by {by} makes its own table from the run folders and cannot be combined with {clash}; "
                           "drop one of them")
    test = test or "t"
    for value, choices, what in ((phase, PHASES, "phase"), (source, SOURCES, "source"), (test, TESTS, "test"),
                                 (figure, FIGURES, "figure"), (run_ci, RUN_CIS, "--run-ci")):
        if value is not None and value not in choices:
            raise unknown_choice(what, value, choices)
    _check_names(study, table, fmt, dataset, method, mask, baseline)
    settings = get_settings()
    if out is not None:
        check_out_file(out, figure=figure is not None)
    elif figure is not None:
        check_out_file(Path(f"figures/report_{figure}.png"))
    chosen_phase = None if phase == "all" else phase
    search = None  # the searches behind a seeds-phase table: what each selection rule picks there
    if source == "wandb":
        from dgx.report.wandb_source import load_wandb_runs

        runs = load_wandb_runs(entity or settings.wandb_entity, project or settings.wandb_project,
                               study_prefix=study, phase=chosen_phase)
    else:
        url = storage or settings.default_storage()
        runs = load_runs(url, study_prefix=study, phase=chosen_phase)
        search = search_runs(url, study) if phase == "seeds" else None
        if study is None:
            runs, search = default_studies(runs, search, url)
    filters = {"dataset": dataset, "method": None if table in ("2", "5") else method, "mask": mask}
    runs = filter_runs(runs, **filters)
    _check_baseline(baseline, runs)
    if figure is not None:
        from dgx.report.figures import draw

        path = draw(figure, runs, out or Path(f"figures/report_{figure}.png"), settings.runs_dir)
        return f"wrote {path}\n"
    if by is not None:
        from dgx.report.render import render
        from dgx.report.runci import read_groups, read_scores
        from dgx.report.subgroups import subgroup_tables

        if "run_id" in runs.columns:
            for run_id in dict.fromkeys(runs["run_id"]):  # a damaged file is one line, not a traceback
                read_scores(settings.runs_dir, str(run_id))
                read_groups(settings.runs_dir, str(run_id))

        text = render(subgroup_tables(runs, settings.runs_dir, by), fmt)
    elif run_ci is not None:
        from dgx.report.runci import run_ci_table

        text = run_ci_table(runs, settings.runs_dir, run_ci, fmt)
    else:
        text = build_report(None, shape=table, fmt=fmt, method=method[0] if method and table in ("2", "5") else None,
                            baseline=baseline, test=test, runs=runs, search=search)
    if source != "wandb":  # after the table: a bad input stays one error line
        missing_folders(runs, settings.runs_dir, storage or settings.default_storage())
    if out is None:
        return text
    write_atomic(out, text)
    return f"wrote {out}\n"




def default_studies(runs, search, url: str):
    """Without --study: the studies a plain `dgx sweep`/`dgx reproduce` names (no ``-oHASH`` of overridden
    settings), saying on stderr which others the storage holds and how to report them."""
    from dgx.progress import say
    from dgx.runs import OVERRIDDEN
    from dgx.storage import shown_url

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
    from dgx.runs import RESULT, run_dir
    from dgx.storage import shown_url

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


def _check_names(study, table, fmt, dataset, method, mask, baseline) -> None:
    """Every name a user typed is one dgx knows (before any storage is opened)."""
    from dgx.data import DATASETS
    from dgx.data.base import MASK_KINDS
    from dgx.methods import METHODS
    from dgx.report.load import ORACLE
    from dgx.report.tables import FORMATS, SHAPES

    check_name("--study", study)
    check_choice("table", table, SHAPES)
    check_choice("format", fmt, FORMATS)
    for values, kind, choices in ((dataset, "--dataset", DATASETS), (method, "--method", [*METHODS, ORACLE]),
                                  (mask, "--mask", MASK_KINDS)):
        for value in values or []:
            check_choice(kind, value, choices)
    if baseline and baseline.startswith("mask:"):
        check_choice("--baseline mask", baseline[len("mask:"):], [k for k in MASK_KINDS if k != "none"])


def _check_baseline(baseline: str | None, runs) -> None:
    """A baseline the chosen runs have: else every Δ would be empty."""
    from dgx.methods import BASELINE

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
    from dgx.runs import atomic_write_text

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as exc:
        raise DgxError(f"cannot write {path}: {exc.strerror}; pass --out to a writable location") from None


__all__ = ["run_report", "write_atomic", "default_studies", "missing_folders"]
