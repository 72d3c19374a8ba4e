"""The ``dgx`` command line: one module per command group.

Importing it loads typer, rich and the settings only: each command imports
torch, Optuna, pandas or matplotlib inside its body, so ``dgx --help`` stays
fast (a test checks that importing ``dgx.cli`` loads none of them).

User mistakes (bad flags, missing files) print one line and exit 2 with no
traceback; unexpected errors keep their traceback.
"""

from __future__ import annotations

import logging
import signal
import sys

import typer
from rich.logging import RichHandler
from typer._click import exceptions as click_exc
from typer.core import TyperGroup

from dgx.errors import DgxError
from dgx.progress import console


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, Kubernetes and `kill` send) as an exception: it unwinds like Ctrl-C, so the running
    trial is told FAIL (retryable) and a restarted worker takes it again at once, instead of after the heartbeat
    grace a killed process needs."""


_TERMINATED = [False]  # typer turns the KeyboardInterrupt into exit code 130 and drops it: the handler notes it


def _raise_terminated(signum, frame) -> None:
    _TERMINATED[0] = True
    raise Terminated()


def _on_sigterm():
    """Install the SIGTERM handler (main thread only); the previous handler, or None where none was set."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


class DgxGroup(TyperGroup):
    """Turns usage errors and :class:`DgxError` into one line on stderr and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        previous = _on_sigterm()
        _TERMINATED[0] = False
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
        except (typer.Abort, KeyboardInterrupt) as exc:  # Click turns these (and EOFError) into Abort
            cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__cause__
            rv = 130
            if isinstance(cause, EOFError):  # a truncated file read somewhere dgx did not expect one
                rv = 1
                typer.echo(" ".join(f"error: a file ended early ({cause}); one of the files this command reads is truncated: copy or "
                                    "build it again".split()), err=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if rv == 130 and _TERMINATED[0]:
            rv = 143
            typer.echo("terminated (SIGTERM); its trial is marked for retry: rerun the same command, or start a "
                       "worker, to resume it from its last epoch", err=True)
        elif rv == 130:  # Ctrl-C (typer turns KeyboardInterrupt into exit code 130 itself)
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
        from dgx import __version__  # the library loads when the command runs (dgx --help stays fast)

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
    from dgx.progress import set_progress  # the library loads when the command runs (dgx --help stays fast)

    set_progress(not (quiet or no_progress), quiet=quiet)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, show_time=False)
    else:  # a log file or a pipe: one unwrapped, timestamped line per record, like the progress lines
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s  %(levelname)s  %(message)s", "%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else (logging.WARNING if quiet else logging.INFO),
                        handlers=[handler], force=True)
    for noisy in NOISY_LOGGERS:  # third-party chatter (font caches, HTTP retries) never reaches a dgx log
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


NOISY_LOGGERS = ("matplotlib", "PIL", "urllib3", "wandb", "numexpr", "h5py", "git", "filelock", "fsspec")


from dgx.cli import doctor as _doctor  # noqa: E402  (commands register on `app`)
from dgx.cli import report as _report  # noqa: E402
from dgx.cli import reproduce as _reproduce
from dgx.cli import sweep as _sweep
from dgx.cli import train as _train
from dgx.cli import worker as _worker

app.command("train")(_train.train)
app.command("sweep")(_sweep.sweep)
app.command("report")(_report.report)
app.command("worker")(_worker.worker)
app.command("reproduce")(_reproduce.reproduce)
app.command("doctor")(_doctor.doctor)

import threading

from dgx.cli.analyze import analyze_app  # noqa: E402
from dgx.cli.data import data_app
from dgx.cli.masks import masks_app

app.add_typer(data_app, name="data")
app.add_typer(analyze_app, name="analyze")
app.add_typer(masks_app, name="masks")


def main() -> None:
    app()
