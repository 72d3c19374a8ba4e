"""Rich progress bars and console, shared by the training loop and sweeps.

Everything goes to stderr, so stdout carries only results (tables) and can be
piped or redirected.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def make_progress(transient: bool = False) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=transient,
    )


def result_console() -> Console:
    """A stdout console for result tables; wide when piped, so rows are never wrapped mid-cell."""
    import sys

    return Console(width=None if sys.stdout.isatty() else 200)
