"""``dgx report`` as one function: load the runs (Optuna storage or W&B), filter them, render a table or a figure."""

from __future__ import annotations

from pathlib import Path

from dgx.config import get_settings
from dgx.errors import DgxError, unknown_choice

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
    from dgx.report import filter_runs
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
    settings = get_settings()
    chosen_phase = None if phase == "all" else phase
    if source == "wandb":
        from dgx.report.wandb_source import load_wandb_runs

        runs = load_wandb_runs(entity or settings.wandb_entity, project or settings.wandb_project,
                               study_prefix=study, phase=chosen_phase)
    else:
        url = storage or settings.default_storage()
        runs = load_runs(url, study_prefix=study, phase=chosen_phase)
    filters = {"dataset": dataset, "method": None if table in ("2", "5") else method, "mask": mask}
    runs = filter_runs(runs, **filters)
    if figure is not None:
        from dgx.report.figures import draw

        path = draw(figure, runs, out or Path(f"figures/report_{figure}.png"), settings.runs_dir)
        return f"wrote {path}\n"
    if by is not None:
        from dgx.report.render import render
        from dgx.report.subgroups import subgroup_tables

        text = render(subgroup_tables(runs, settings.runs_dir, by), fmt)
    elif run_ci is not None:
        from dgx.report.runci import run_ci_table

        text = run_ci_table(runs, settings.runs_dir, run_ci, fmt)
    else:
        text = build_report(None, shape=table, fmt=fmt, method=method[0] if method and table in ("2", "5") else None,
                            baseline=baseline, test=test, runs=runs)
    if out is None:
        return text
    write_atomic(out, text)
    return f"wrote {out}\n"




def write_atomic(path: Path, text: str) -> None:
    from dgx.runs import atomic_write_text

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as exc:
        raise DgxError(f"cannot write {path}: {exc.strerror}; pass --out to a writable location") from None


__all__ = ["run_report", "write_atomic"]
