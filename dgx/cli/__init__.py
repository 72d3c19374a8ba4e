"""The ``dgx`` command line: one module per command group.

Importing it loads typer, rich and the settings only: each command imports
torch, Optuna, pandas or matplotlib inside its body, so ``dgx --help`` stays
fast (a test checks that importing ``dgx.cli`` loads none of them).

User mistakes (bad flags, missing files) print one line and exit 2 with no
traceback; unexpected errors keep their traceback.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.logging import RichHandler
from typer._click import exceptions as click_exc
from typer.core import TyperGroup

from dgx.errors import DgxError
from dgx.progress import console


class DgxGroup(TyperGroup):
    """Turns usage errors and :class:`DgxError` into one line on stderr and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError as exc:
            typer.echo(exc.format_message())
            rv = 0
        except click_exc.UsageError as exc:
            where = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            typer.echo(" ".join(f"error: {exc.format_message()}{where}".split()), err=True)  # always one line
            rv = 2
        except DgxError as exc:
            typer.echo(" ".join(f"error: {exc}".split()), err=True)  # always one line
            rv = 2
        except (typer.Abort, KeyboardInterrupt):
            rv = 130
        if rv == 130:  # Ctrl-C (Click turns KeyboardInterrupt into exit code 130 itself)
            typer.echo("interrupted; rerun the same command to resume", err=True)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=DgxGroup,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    help="Domain-generalization sweeps for chest X-ray classifiers (ERM, ActDiff, RRR, GradMask).",
)


def _version(value: bool) -> None:
    if value:
        from dgx import __version__

        typer.echo(f"dgx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug logging."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results, warnings and errors: no progress, "
                                     "no informational log lines."),
          no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars or progress lines (on a "
                                           "terminal or in a log)."),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print dgx's version and exit.")) -> None:
    from dgx.progress import set_progress

    set_progress(not (quiet or no_progress))
    logging.basicConfig(
        level=logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO),
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    for noisy in NOISY_LOGGERS:  # third-party chatter (font caches, HTTP retries) never reaches a dgx log
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


NOISY_LOGGERS = ("matplotlib", "PIL", "urllib3", "wandb", "numexpr", "h5py", "git", "filelock", "fsspec")


from dgx.cli import doctor as _doctor  # noqa: E402  (commands register on `app`)
from dgx.cli import report as _report  # noqa: E402
from dgx.cli import reproduce as _reproduce  # noqa: E402
from dgx.cli import sweep as _sweep  # noqa: E402
from dgx.cli import train as _train  # noqa: E402
from dgx.cli import worker as _worker  # noqa: E402

app.command("train")(_train.train)
app.command("sweep")(_sweep.sweep)
app.command("report")(_report.report)
app.command("worker")(_worker.worker)
app.command("reproduce")(_reproduce.reproduce)
app.command("doctor")(_doctor.doctor)

from dgx.cli.analyze import analyze_app  # noqa: E402
from dgx.cli.data import data_app  # noqa: E402
from dgx.cli.masks import masks_app  # noqa: E402

app.add_typer(data_app, name="data")
app.add_typer(analyze_app, name="analyze")
app.add_typer(masks_app, name="masks")


def main() -> None:
    app()
