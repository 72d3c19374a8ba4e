"""``dgx report``: seed-averaged tables in the shapes of the paper's Tables 1, 2, 3 and 5."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from dgx.config import get_settings
from dgx.errors import DgxError, unknown_choice

PHASES = ("seeds", "search", "all")
SOURCES = ("optuna", "wandb")
TESTS = ("t", "wilcoxon")
FIGURES = ("bars", "roc")
RUN_CIS = ("delong", "bootstrap")


def report(
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL. Default: DGX_STORAGE or sqlite:///runs/dgx.db.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", "--study-prefix", help="Only studies whose name starts with this prefix.")] = None,
    phase: Annotated[str, typer.Option("--phase", help="Trials to count: seeds (default), search, or all.")] = "seeds",
    table: Annotated[str, typer.Option("--table", help="Paper shape: 1 (domain × method), 2 / 5 (mask × domain for ActDiff / RRR), 3 (periphery methods with a Gain column vs abnormality).")] = "1",
    fmt: Annotated[str, typer.Option("--format", help="markdown | latex | csv | json.")] = "markdown",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file (atomically) instead of stdout; with --figure, the PNG path.")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="Only these datasets (train size: cxr-p vs cxr-p-full), repeatable.")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="Only these methods, repeatable; for --table 2/5 the one method shown.")] = None,
    mask: Annotated[Optional[list[str]], typer.Option("--mask", help="Only these masks, repeatable.")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Paired comparison per cell across seeds: erm, mask:NAME (e.g. mask:abnormality) or none.")] = None,
    test: Annotated[str, typer.Option("--test", help="Paired test: t (paired Student t) or wilcoxon (signed-rank).")] = "t",
    source: Annotated[str, typer.Option("--source", help="optuna (the storage) or wandb (the W&B public API).")] = "optuna",
    entity: Annotated[Optional[str], typer.Option("--entity", help="W&B entity for --source wandb. Default: WANDB_ENTITY.")] = None,
    project: Annotated[Optional[str], typer.Option("--project", help="W&B project for --source wandb. Default: WANDB_PROJECT.")] = None,
    figure: Annotated[Optional[str], typer.Option("--figure", help="Draw a PNG instead of a table: bars (AUROC ± CI per domain and method/mask) or roc (ROC curves per domain of --study's runs).")] = None,
    run_ci: Annotated[Optional[str], typer.Option("--run-ci", help="Per-run AUROC intervals from the saved scores: delong or bootstrap.")] = None,
) -> None:
    """Print test AUROC per domain and method: mean ± 95% CI (t) across seeds, with n."""
    from dgx.report import filter_runs, report as build_report
    from dgx.report.load import load_runs

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
        typer.echo(f"wrote {path}")
        return
    if run_ci is not None:
        from dgx.report.runci import run_ci_table

        text = run_ci_table(runs, settings.runs_dir, run_ci, fmt)
    else:
        text = build_report(None, shape=table, fmt=fmt, method=method[0] if method and table in ("2", "5") else None,
                            baseline=baseline, test=test, runs=runs)
    if out is None:
        typer.echo(text, nl=False)
        return
    write_atomic(out, text)
    typer.echo(f"wrote {out}")


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise DgxError(f"cannot write {path}: {exc.strerror}; pass --out to a writable location") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
