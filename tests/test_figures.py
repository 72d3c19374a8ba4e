"""Figure commands end to end through CliRunner, on the real reference data and decoy-cxr."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from dgx.analyze import mass_box, upper_half_fraction
from dgx.cli import DgxGroup
from dgx.cli.analyze import analyze_app
from dgx.cli.masks import masks_app
from tests.helpers import reference_dir as shared_reference

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--data-opt", "n_train=24", "--data-opt", "n_val=4", "--data-opt", "n_test=4", "--data-opt", "n_target=2"]

app = typer.Typer(cls=DgxGroup, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(analyze_app, name="analyze")
app.add_typer(masks_app, name="masks")
runner = CliRunner()


def reference_dir() -> Path:
    return shared_reference("cxr_p_gaze.csv.gz")


def measured(output: str, name: str) -> float:
    match = re.search(rf"{name}: ([0-9.]+)", output)
    assert match, output
    return float(match.group(1))


def test_upper_half_fraction_and_mass_box():
    heat = np.zeros((4, 4))
    heat[0, 0], heat[3, 3] = 3.0, 1.0
    assert upper_half_fraction(heat) == 0.75
    assert upper_half_fraction(np.ones((3, 2))) == pytest.approx(0.5)  # odd middle row split evenly
    x0, x1, y0, y1 = mass_box(heat, tail=0.01)
    assert (x0, x1, y0, y1) == (0.0, 1.0, 0.0, 1.0)


def test_analyze_gaze_reproduces_figure1(tmp_path, monkeypatch):
    monkeypatch.delenv("DGX_REFERENCE_DIR", raising=False)
    out = tmp_path / "fig" / "figure1.png"
    args = ["analyze", "gaze", "--reference", str(reference_dir()), "--out", str(out), "--size", "64"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not list(out.parent.glob(".*"))  # no temp file left behind
    assert measured(result.output, "gaze images \\(CXR-P train/val with gaze\\)") == 974
    assert measured(result.output, "positive masks \\(CXR-P train/val positives with RLE\\)") == 257  # 208 + 49
    assert 0.65 <= measured(result.output, "abnormality mass in upper half") <= 0.77
    # Gaze binned row = x (the reference README): radiologists dwell on the apices, over the abnormality.
    assert 0.65 <= measured(result.output, "gaze dwell in upper half") <= 0.85  # measured 0.74 (0.47 transposed)
    assert measured(result.output, "pixel correlation of mean gaze with mean abnormality") > 0.6  # measured 0.75


def test_analyze_gaze_reads_reference_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DGX_REFERENCE_DIR", str(reference_dir()))
    out = tmp_path / "f.png"
    result = runner.invoke(app, ["analyze", "gaze", "--out", str(out), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert out.is_file()


@pytest.mark.parametrize("where", ["unset", "missing"])
def test_analyze_gaze_without_reference_is_one_line_error(tmp_path, monkeypatch, where):
    monkeypatch.delenv("DGX_REFERENCE_DIR", raising=False)
    args = ["analyze", "gaze", "--out", str(tmp_path / "f.png")]
    if where == "missing":
        args += ["--reference", str(tmp_path / "nowhere")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--reference" in lines[0], result.output
    assert not (tmp_path / "f.png").exists()


def test_masks_show_draws_figure2(tmp_path):
    from dgx.config import get_settings
    from dgx.data import load_dataset

    out = tmp_path / "figure2.png"
    result = runner.invoke(app, ["masks", "show", *TINY, "--index", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_MAGIC
    opts = {a.split("=")[0]: a.split("=")[1] for a in TINY[1::2]}
    train = load_dataset("decoy-cxr", opts, None, get_settings().data_dir).train
    i = np.flatnonzero(train.labels == 1)[1]
    for kind in ("abnormality", "scaled", "periphery"):
        assert measured(result.output, kind) == train.masks[kind][i].sum()
    # The paper's ordering: the tight mask lies inside both wider ones.
    assert measured(result.output, "abnormality") < measured(result.output, "periphery")


def test_masks_show_index_out_of_range(tmp_path):
    result = runner.invoke(app, ["masks", "show", *TINY, "--index", "99", "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --index 99 is out of range"), result.output
