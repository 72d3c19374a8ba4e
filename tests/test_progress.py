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


def test_a_finished_task_prints_its_100_percent_line_once():
    """Every 100% line was printed twice: once at the last advance, again with [done]."""
    out = io.StringIO()
    bar = LineProgress(stream=out, interval_s=0.0)  # every advance would print
    task = bar.add_task("scoring 4 images (1 splits)", total=4, status="")
    for _ in range(4):
        bar.advance(task)
    bar.update(task, status="val 0.9")  # a status change at 100% does not print either: the [done] line says it
    bar.remove_task(task)
    lines = out.getvalue().splitlines()
    assert sum("4/4 (100%)" in line for line in lines) == 1 and lines[-1].endswith("val 0.9  [done]")


def test_quiet_is_quieter_than_no_progress_and_piped_lines_are_timestamped(tmp_path):
    """--quiet and --no-progress once printed the same; INFO lines had no timestamp when piped."""
    args = ["sweep", "erm", "--trials", "1", "--seeds", "1", "--epochs", "1", "--no-oracle", *cli_data_args()]
    runner = CliRunner()
    loud = runner.invoke(app, args)  # trains; the next two reuse its run folders
    assert "scoring " in loud.stderr and "lr=0.001 wd=0 seed 0" in loud.stderr  # scoring and the grid point show
    plain = runner.invoke(app, ["--no-progress", *args])
    assert plain.exit_code == 0, plain.output
    assert "dgx sweep erm-none-decoy-cxr-quick-o" in plain.stderr  # the header: information
    assert all(STAMP.match(line) for line in plain.stderr.splitlines() if line.strip())  # every line stamped
    assert "[done]" not in plain.stderr
    quiet = runner.invoke(app, ["--quiet", *args])
    assert quiet.exit_code == 0, quiet.output
    assert "dgx sweep" not in quiet.stderr and "sweep finished" not in quiet.stderr
    assert "| Target average" in quiet.stdout  # the result stays
