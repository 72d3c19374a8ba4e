"""LaTeX output: the booktabs requirement stated, targets underlined (and the legend saying so), run-ci columns."""

from __future__ import annotations

import re

import numpy as np
import optuna
import pytest
from typer.testing import CliRunner

from dgx.cli import app
from dgx.report import load_runs
from dgx.report.render import latex_legend, render
from dgx.report.runci import run_ci_table
from dgx.report.tables import build
from dgx.runs import run_dir, save_scores
from tests.test_report import SOURCE, TARGETS, add_run, scores

BOOKTABS = r"% requires \usepackage{booktabs}"
VALUES = {("erm", "none"): [(0.83, 0.77, 0.80), (0.85, 0.78, 0.82), (0.84, 0.76, 0.81)],
          ("rrr", "periphery"): [(0.82, 0.75, 0.78), (0.845, 0.79, 0.80), (0.83, 0.77, 0.83)]}


def fill(storage, runs_dir=None) -> None:
    """Seeds-phase trials as `dgx sweep` records them; with ``runs_dir``, each run folder gets saved scores."""
    rng = np.random.default_rng(0)
    for (method, mask), per_seed in VALUES.items():
        study = optuna.create_study(study_name=f"x-{method}.seeds", storage=storage, direction="maximize")
        for seed, values in enumerate(per_seed):
            run_id = f"{method}{seed}"
            add_run(study, method, mask, seed, scores(values), run_id=run_id)
            if runs_dir is not None:
                labels = np.tile([0, 1], 20)
                per_domain = {d: (labels, np.clip(labels * 0.3 + rng.random(len(labels)), 0, 1))
                              for d in [SOURCE, *TARGETS]}
                folder = run_dir(runs_dir, run_id)
                folder.mkdir(parents=True)
                save_scores(folder / "scores.npz", per_domain)


def tabular_rows(text: str) -> list[list[str]]:
    """The header and body rows of every tabular in ``text``, split into cells."""
    rows = []
    for line in text.splitlines():
        if line.endswith(r"\\"):
            rows.append([c.strip() for c in re.split(r"(?<!\\)&", line.removesuffix(r"\\"))])
    return rows


def test_the_legend_is_reworded_for_latex_and_keeps_the_rest():
    note = "_italic_ = OOD target domain; n = seeds; — = not run (no result)."
    assert latex_legend(note) == "underlined = OOD target domain; n = seeds; — = not run (no result)."
    assert latex_legend("n = seeds") == "n = seeds"


@pytest.mark.parametrize("shape", ["1", "2"])
def test_latex_tables_need_booktabs_underline_targets_and_say_so(shape):
    storage = optuna.storages.InMemoryStorage()
    fill(storage)
    tables = build(load_runs(storage), shape)
    text = render(tables, "latex")
    blocks = text.strip().split("\n\n")
    assert len(blocks) == len(tables)
    for block in blocks:
        assert block.splitlines()[0] == BOOKTABS
        assert r"\toprule" in block
    for target in TARGETS:
        assert rf"\underline{{{target}}}" in text
    assert rf"\underline{{{SOURCE}}}" not in text
    assert "italic" not in text.lower()
    assert "% underlined = OOD target domain; n = seeds;" in text  # the rest of the note is kept
    assert "_italic_ = OOD target domain" in render(tables, "markdown")  # markdown keeps its own legend


def test_run_ci_latex_underlines_targets_and_has_the_markdown_columns(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    fill(storage, tmp_path / "runs")
    runs = load_runs(storage)
    latex = run_ci_table(runs, tmp_path / "runs", "delong", "latex")
    markdown = run_ci_table(runs, tmp_path / "runs", "delong", "markdown")
    lines = latex.splitlines()
    assert lines[0] == BOOKTABS and r"\toprule" in latex
    md_rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("|")]
    header, *body = tabular_rows(latex)
    assert header == md_rows[0] and "Images" in header
    assert len(body) == len(md_rows) - 2 == 6 * 3  # 6 runs × 3 domains; markdown adds its rule line
    assert re.search(r"\\begin\{tabular\}\{([lr]+)\}", latex).group(1) == "llrlrlr"
    for row, md in zip(body, md_rows[2:]):
        assert len(row) == len(header)
        domain = md[3].strip("_")
        assert row[3] == (rf"\underline{{{domain}}}" if domain in TARGETS else domain)
        assert row[-1] == md[-1] == "40"  # images scored
    assert "% underlined = OOD target domain." in lines
    assert "italic" not in latex.lower()


def test_report_run_ci_latex_from_the_command_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    fill(url, tmp_path / "runs")  # the test's DGX_RUNS_DIR
    result = CliRunner().invoke(app, ["report", "--storage", url, "--run-ci", "delong", "--format", "latex"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(BOOKTABS)
    assert rf"\underline{{{TARGETS[0]}}}" in result.stdout and "Images" in result.stdout
