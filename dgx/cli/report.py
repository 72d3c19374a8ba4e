"""``dgx report``: seed-averaged tables in the shapes of the paper's Tables 1, 2, 3 and 5."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL. Default: DGX_STORAGE or sqlite:///runs/dgx.db.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", "--study-prefix", help="Only studies whose name starts with this prefix, or those of one override tag (oHASH: the settings a flag changed from the budget, as in rrr-periphery-decoy-cxr-quick-o1a2b3c). Default: the studies of plain commands (no tag).")] = None,
    phase: Annotated[str, typer.Option("--phase", help="Trials to count: seeds (default), search, or all.")] = "seeds",
    table: Annotated[str, typer.Option("--table", help="Paper shape: 1 (domain × method), 2 / 5 (mask × domain for ActDiff / RRR), 3 (periphery methods with a Gain column vs abnormality).")] = "1",
    fmt: Annotated[str, typer.Option("--format", help="markdown | latex | csv | json.")] = "markdown",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write to this file (atomically) instead of stdout; with --figure, the figure: .png, .pdf or .svg (the suffix picks the format).")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option("--dataset", help="Only these datasets (train size: cxr-p vs cxr-p-full), repeatable.")] = None,
    method: Annotated[Optional[list[str]], typer.Option("--method", help="Only these methods, repeatable; for --table 2/5 the one method shown.")] = None,
    mask: Annotated[Optional[list[str]], typer.Option("--mask", help="Only these masks, repeatable.")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Paired comparison per cell across seeds: erm, mask:NAME (e.g. mask:abnormality) or none.")] = None,
    test: Annotated[Optional[str], typer.Option("--test", help="Paired test with --baseline: t (paired Student t, the default) or wilcoxon (signed-rank). Stars use Holm's correction within a table.")] = None,
    source: Annotated[str, typer.Option("--source", help="optuna (the storage) or wandb (the W&B public API).")] = "optuna",
    entity: Annotated[Optional[str], typer.Option("--entity", help="W&B entity for --source wandb. Default: WANDB_ENTITY.")] = None,
    project: Annotated[Optional[str], typer.Option("--project", help="W&B project for --source wandb. Default: WANDB_PROJECT.")] = None,
    figure: Annotated[Optional[str], typer.Option("--figure", help="Draw a PNG instead of a table: bars (AUROC ± CI per domain and method/mask) or roc (ROC curves per domain of --study's runs).")] = None,
    run_ci: Annotated[Optional[str], typer.Option("--run-ci", help="Per-run AUROC intervals from the saved scores: delong or bootstrap.")] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="Worst-subgroup table: AUROC per group and the worst group per method. age (bands <50, 50-70, >70; decoy-cxr: aged signs), sex, view, or decoy (decoy-cxr: token present). Keys come from the run folders, never from W&B.")] = None,
) -> None:
    """Print test AUROC per domain and method: mean ± 95% CI (t) across seeds, with n."""
    from dgx.report.command import run_report  # optuna, pandas (dgx.report): only when the command runs
    from dgx.report.request import ReportRequest  # dgx.report's package loads optuna, pandas: only when it runs

    request = ReportRequest(storage=storage, study=study, phase=phase, table=table, fmt=fmt, out=out,
                            dataset=tuple(dataset or ()), method=tuple(method or ()), mask=tuple(mask or ()),
                            baseline=baseline, test=test, source=source, entity=entity, project=project,
                            figure=figure, run_ci=run_ci, by=by)
    typer.echo(run_report(request), nl=False)
