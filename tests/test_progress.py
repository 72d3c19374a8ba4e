"""Progress in a log: plain timestamped lines when stderr is not a terminal; --quiet and --no-progress."""

from __future__ import annotations

import io
import re

from typer.testing import CliRunner

from dgx.cli import app
from dgx.progress import LineProgress, make_progress
from tests.helpers import cli_data_args

STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}  ")


def test_line_progress_reports_status_changes_and_end():
    out = io.StringIO()
    bar = LineProgress(stream=out, interval_s=3600)
    task = bar.add_task("train rrr", total=4, status="")
    bar.advance(task)  # no status change and the interval has not passed: no line
    bar.update(task, advance=1, status="loss 0.5")
    bar.advance(task, 2)
    bar.remove_task(task)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(STAMP.match(line) for line in lines)
    assert "2/4 (50%)" in lines[0] and "loss 0.5" in lines[0]
    assert "4/4 (100%)" in lines[1] and lines[1].endswith("[done]")


def test_line_progress_keeps_a_log_alive_and_says_when_a_task_stopped():
    out = io.StringIO()
    bar = LineProgress(stream=out, interval_s=0.0)  # every advance is past the interval
    task = bar.add_task("sweep", total=10)
    for _ in range(3):
        bar.advance(task)
    bar.stop()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "3/10 (30%)" in lines[2] and "eta " in lines[2] and lines[3].endswith("[stopped]")
    quick = io.StringIO()  # a task that stops before its first line (a bad input) leaves the log clean
    early = LineProgress(stream=quick, interval_s=3600)
    early.add_task("cache", total=8)
    early.stop()
    assert quick.getvalue() == ""
    silent = io.StringIO()
    off = LineProgress(stream=silent)
    off.disable = True
    off.add_task("x", total=1)
    off.stop()
    assert silent.getvalue() == ""


def test_piped_commands_log_lines_and_quiet_silences_them(tmp_path):
    assert isinstance(make_progress(), LineProgress)  # pytest's stderr is not a terminal
    args = ["train", "erm", "--epochs", "1", *cli_data_args()]
    loud = CliRunner().invoke(app, args)
    assert loud.exit_code == 0 and "[done]" in loud.output and "loss " in loud.output
    for flag in ("--quiet", "--no-progress"):
        quiet = CliRunner().invoke(app, [flag, *args])
        assert quiet.exit_code == 0 and "[done]" not in quiet.output and "cxr-p-synth" in quiet.output
