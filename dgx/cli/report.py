"""``dgx report``: seed-averaged tables in the shape of the paper's Table 1."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dgx.config import get_settings
from dgx.errors import unknown_choice

PHASES = ("seeds", "search", "all")


def report(
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL. Default: DGX_STORAGE or sqlite:///runs/dgx.db.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", "--study-prefix", help="Only studies whose name starts with this prefix.")] = None,
    phase: Annotated[str, typer.Option("--phase", help="Trials to count: seeds (default), search, or all.")] = "seeds",
) -> None:
    """Print test AUROC per domain and method: mean ± 95% CI (t) across seeds, with n."""
    from dgx.report import report as build

    if phase not in PHASES:
        raise unknown_choice("phase", phase, PHASES)
    url = storage or get_settings().default_storage()
    typer.echo(build(url, study_prefix=study, phase=None if phase == "all" else phase))
