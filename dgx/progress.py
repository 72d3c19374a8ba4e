"""Progress and console, shared by the training loop, sweeps and data preparation.

Everything goes to stderr, so stdout carries only results (tables) and can be
piped or redirected. On a terminal, progress is a rich bar. When stderr is not
a terminal (a SLURM log, a pipe, ``2> file``) it is plain timestamped lines,
one whenever a task's status changes (each epoch of a training), at least
one every :data:`LINE_INTERVAL_S` seconds while it advances, and one when it
ends (a task that fails before its first line stays silent, so a bad input
is still one line), so a log shows that a job is alive and
how far it got. ``dgx --no-progress`` turns both off, ``dgx --quiet`` also
the informational lines (:func:`say` and INFO logs), leaving results, warnings and errors.
"""

from __future__ import annotations

import sys
import time

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
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)  # log lines are never wrapped at 80 columns when piped
LINE_INTERVAL_S = 20.0  # plain-line mode: a running task reports at least this often (when it advances)
_ENABLED = [True]  # dgx --no-progress / --quiet


_QUIET = [False]  # dgx --quiet: informational lines (say) off too


def set_progress(enabled: bool, quiet: bool = False) -> None:
    """Turn progress reporting on or off for this process (the root options of the CLI); ``quiet`` also
    silences :func:`say`."""
    _ENABLED[0] = enabled
    _QUIET[0] = quiet


def say(text: str) -> None:
    """An informational message on stderr (rich markup allowed): silent under ``--quiet``; on a terminal as
    rich prints it, else plain, each line timestamped like the progress lines."""
    if _QUIET[0]:
        return
    if console.is_terminal:
        console.print(text)
        return

    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    for line in Text.from_markup(text).plain.splitlines():
        print(f"{stamp}  {line}", file=sys.stderr, flush=True)


def make_progress(transient: bool = False):
    """A rich bar on a terminal, else :class:`LineProgress`; both disabled after ``set_progress(False)``."""
    if not console.is_terminal:
        bar = LineProgress()
    else:
        bar = Progress(
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
    bar.disable = not _ENABLED[0]
    return bar


class _Task:
    def __init__(self, description: str, total: float | None, completed: float, fields: dict) -> None:
        self.description, self.total, self.completed, self.fields = description, total, completed, fields
        self.started = time.monotonic()
        self.start_completed = completed
        self.last_line = 0.0
        self.printed = False


class LineProgress:
    """The part of rich's ``Progress`` API dgx uses, written as plain timestamped lines for logs."""

    def __init__(self, stream=None, interval_s: float = LINE_INTERVAL_S) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.disable = False
        self.tasks: dict[int, _Task] = {}

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for task_id in list(self.tasks):
            self.remove_task(task_id)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields) -> int:
        task_id = len(self.tasks) and max(self.tasks) + 1
        task = self.tasks[task_id] = _Task(description, total, completed, fields)
        task.last_line = task.started  # the first line comes with progress, not at the start
        return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, description: str | None = None, **fields) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        new_status = "status" in fields and fields["status"] != task.fields.get("status")
        task.fields.update(fields)
        if task.total is not None and task.completed >= task.total:
            return  # its [done] line, when the task is removed, is the one line at 100%
        if new_status or time.monotonic() - task.last_line >= self.interval_s:
            self._line(task, "")

    def remove_task(self, task_id: int) -> None:
        """The task's last line: ``[done]`` when it reached its total, else ``[stopped]``."""
        task = self.tasks.pop(task_id, None)
        if task is None:
            return
        done = task.total is not None and task.completed >= task.total
        if done or task.printed:
            self._line(task, "done" if done else "stopped")

    def _line(self, task: _Task, event: str) -> None:
        task.last_line = time.monotonic()
        if self.disable:
            return
        task.printed = True
        elapsed = task.last_line - task.started
        parts = [time.strftime("%Y-%m-%d %H:%M:%S"), task.description]
        if task.total:
            parts.append(f"{task.completed:g}/{task.total:g} ({100 * task.completed / task.total:.0f}%)")
        parts.append(f"elapsed {_clock(elapsed)}")
        rate = (task.completed - task.start_completed) / elapsed if elapsed > 0 else 0.0
        if task.total and rate > 0 and task.completed < task.total:
            parts.append(f"eta {_clock((task.total - task.completed) / rate)}")
        status = str(task.fields.get("status", "") or "")
        if status:
            parts.append(status)
        if event:
            parts.append(f"[{event}]")
        print("  ".join(parts), file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def result_console() -> Console:
    """A stdout console for result tables; wide when piped, so rows are never wrapped mid-cell."""
    return Console(width=None if sys.stdout.isatty() else 200)
