"""The measured throughput table (dgx/throughput.py) and the cost estimate `dgx reproduce --dry-run` builds on it."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dgx.cli import app
from dgx.errors import DgxError
from dgx.sweep.paper import PRUNED_EPOCHS_SAVED
from dgx.throughput import default_table_path, load_table, write_table

# Table 1 of the paper as sweeps/paper/table1.yaml plans it: (method, grid points, seeds, epochs), on CXR-P's
# 947 training images; every λ has 3 LR x 6 WD = 18 points that differ only in LR and WD.
TABLE1 = (("erm", 18, 10, 15), ("actdiff", 108, 10, 100), ("rrr", 108, 10, 100))
CXR_P = 947


def table(path, img_s, **extra):
    body = {"measured": "2026-12-03T10:00:00+00:00", "device": "NVIDIA H200", "batch": 16, "img_s": img_s, **extra}
    path.write_text(json.dumps(body))
    return path


def dry_run(*args: str):
    result = CliRunner().invoke(app, ["reproduce", "table1", "--dry-run", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def hours(out: str, variant: str) -> float:
    match = re.search(rf"^\s+{re.escape(variant)}:\s+([\d.]+)", out, re.MULTILINE)
    assert match, f"no {variant!r} line in:\n{out}"
    return float(match.group(1))


def expected(rates: dict[str, float], *, pruned: bool = False, packed: dict[str, tuple[int, float]] | None = None) -> float:
    """Table 1's GPU-hours from first principles: images / rate, the search phase pruned or packed."""
    total = 0.0
    for method, points, seeds, epochs in TABLE1:
        images = epochs * CXR_P
        if packed and method in packed:
            k, aggregate = packed[method]
            search = (points // 18) * math.ceil(18 / k) * k * images / aggregate
        else:
            search = points * images / rates[method]
        total += search * ((1 - PRUNED_EPOCHS_SAVED) if pruned else 1) + seeds * images / rates[method]
    return total / 3600


def test_the_committed_table_is_the_earlier_h200_measurement():
    t = load_table(default_table_path())
    assert t.device == "NVIDIA H200" and t.batch == 16 and t.measured.startswith("2026-11")
    assert {m: r[1] for m, r in t.img_s.items()} == {"erm": 666, "actdiff": 396, "rrr": 142, "gradmask": 113}


def test_dry_run_reads_the_named_table_and_its_hours_follow_the_numbers(tmp_path):
    rates = {"erm": 600.0, "actdiff": 300.0, "rrr": 150.0, "gradmask": 100.0}
    out = dry_run("--throughput", str(table(tmp_path / "t.json", {m: {"1": v} for m, v in rates.items()})))
    assert "t.json" in out and "measured 2026-12-03T10:00:00+00:00" in out and "NVIDIA H200" in out
    assert hours(out, "full grid") == pytest.approx(expected(rates), abs=0.051)
    assert hours(out, "pruned") == pytest.approx(expected(rates, pruned=True), abs=0.051)
    assert hours(out, "pruned") < hours(out, "full grid")
    # twice the throughput, half the hours
    doubled = dry_run("--throughput", str(table(tmp_path / "t2.json", {m: {"1": 2 * v} for m, v in rates.items()})))
    assert hours(doubled, "full grid") == pytest.approx(expected(rates) / 2, abs=0.051)


def test_dry_run_prints_four_variants_and_the_goal(tmp_path):
    rates = {"erm": 666.0, "actdiff": 396.0, "rrr": 142.0}
    img_s = {"erm": {"1": 666}, "actdiff": {"1": 396}, "rrr": {"1": 142, "2": 250, "4": 480, "8": 600}}
    out = dry_run("--throughput", str(table(tmp_path / "t.json", img_s)))
    for variant in ("full grid", "pruned", "packed", "pruned+packed"):
        hours(out, variant)
    assert "goal: <= 50 H200-hours for all" in out
    assert "seeds phase is never pruned" in out and "7.5–9.4 AUROC points" in out
    assert "erm packing not measured (K=1)" in out and "actdiff packing not measured (K=1)" in out
    # RRR's 18-point groups: K=8 costs 3 packs x 8 / 600, K=4 5 x 4 / 480, K=2 9 x 2 / 250: K=8 is best
    assert "rrr K=8 at 600 img/s aggregate (4.2x one trial)" in out
    packed = {"rrr": (8, 600.0)}
    assert hours(out, "packed") == pytest.approx(expected(rates, packed=packed), abs=0.051)
    assert hours(out, "pruned+packed") == pytest.approx(expected(rates, pruned=True, packed=packed), abs=0.051)
    assert hours(out, "full grid") > hours(out, "packed") > hours(out, "pruned+packed")


def test_dry_run_without_a_table_reads_the_committed_one():
    out = dry_run()
    assert "sweeps/throughput/h200.json" in out and "measured 2026-11" in out
    assert hours(out, "full grid") == pytest.approx(expected({"erm": 666, "actdiff": 396, "rrr": 142}), abs=0.051)


@pytest.mark.parametrize("body,words", [
    (None, ("does not exist",)),
    ("{not json", ("not readable JSON",)),
    ('["a list"]', ("JSON object",)),
    ('{"measured": "x", "device": "y", "batch": 16}', ("lacks", "'img_s'")),
    ('{"measured": "x", "device": "y", "batch": 32, "img_s": {"erm": {"1": 5}}}', ("batch 32", "batch 16")),
    ('{"measured": "x", "device": "y", "batch": 16, "img_s": {"erm": {"1": 0}}}', ("img_s.erm", "positive")),
    ('{"measured": "x", "device": "y", "batch": 16, "img_s": {"erm": {"1": -3.5}}}', ("img_s.erm", "positive")),
    ('{"measured": "x", "device": "y", "batch": 16, "img_s": {"erm": {"1": true}}}', ("img_s.erm", "positive")),
    ('{"measured": "x", "device": "y", "batch": 16, "img_s": {"erm": {"one": 5}}}', ("'one'", "pack sizes")),
    ('{"measured": "x", "device": "y", "batch": 16, "img_s": {"erm": 5}}', ("img_s.erm", "map K")),
])
def test_a_bad_table_is_one_line_naming_the_file_and_exit_2(tmp_path, body, words):
    path = tmp_path / "bad.json"
    if body is not None:
        path.write_text(body)
    result = CliRunner().invoke(app, ["reproduce", "table1", "--dry-run", "--throughput", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert str(path) in lines[0] and "bench/gpu_check.py --table" in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def test_a_table_without_a_method_the_plan_needs_fails_naming_it(tmp_path):
    path = table(tmp_path / "t.json", {"erm": {"1": 600}, "actdiff": {"1": 300}})  # table1 needs rrr too
    result = CliRunner().invoke(app, ["reproduce", "table1", "--dry-run", "--throughput", str(path)])
    assert result.exit_code == 2 and "no img/s for 'rrr'" in result.stderr and str(path) in result.stderr


def test_write_table_is_atomic_and_reads_back(tmp_path):
    path = write_table(tmp_path / "sub" / "t.json", measured="2026-12-03T10:00:00+00:00", device="cpu",
                       img_s={"erm": {1: 10, 4: 30.5}}, torch="2.x", source="test")
    t = load_table(path)
    assert t.img_s == {"erm": {1: 10.0, 4: 30.5}} and t.packed("erm") == {4: 30.5} and t.single("erm") == 10.0
    assert [p.name for p in path.parent.iterdir()] == ["t.json"]  # no temporary file left
    assert json.loads(path.read_text())["torch"] == "2.x"
    with pytest.raises(DgxError, match="positive"):
        write_table(tmp_path / "u.json", measured="x", device="cpu", img_s={"erm": {1: float("nan")}})


def test_the_table_module_needs_no_torch():
    code = "import sys, dgx.throughput; print(','.join(m for m in ('torch', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_reproduce_pack_reaches_every_sweep_plan():
    import dataclasses

    from dgx.spec import ReproduceRequest
    from dgx.sweep import SweepPlan
    from dgx.sweep.paper import paper_specs, plan_specs

    if "pack" not in {f.name for f in dataclasses.fields(SweepPlan)}:
        pytest.skip("this SweepPlan has no pack field")
    plans, _ = plan_specs([paper_specs()["table1"]], "sqlite:///x.db", ReproduceRequest("table1", pack=4))
    assert [p.pack for p in plans["table1"]] == [4, 4, 4]
    plans, _ = plan_specs([paper_specs()["table1"]], "sqlite:///x.db", ReproduceRequest("table1"))
    assert [p.pack for p in plans["table1"]] == [1, 1, 1]
