"""The benchmark suite runs in CI's environment (short mode, small model) and prints every ratio.

No timing is asserted here: the numbers are the benchmark's output, not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import THREADS
from tests.helpers import HANG_S  # a hang guard only (a 600 s limit here failed a suite run at load 8-12)

ROOT = Path(__file__).resolve().parents[1]


def test_bench_short_prints_all_ratios(tmp_path):
    # 64 px: the per-image baselines run train-mode batch norm on one image, which needs > 1 value per
    # channel in the last stage (a 32 px input leaves 1x1 there).
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--short", "--model", "resnet18-w16",
                             "--size", "64", "--batch", "8", "--json", str(out)],
                            capture_output=True, text=True, timeout=HANG_S, check=False)
    assert result.returncode == 0, result.stderr
    for ratio in ("rrr/erm", "actdiff/erm", "actdiff_all_masked/erm", "rrr_speedup", "actdiff_speedup",
                  "loader_img_s", "loader_vs_png"):
        assert ratio in result.stdout
    data = json.loads(out.read_text())
    assert set(data["steps"]) == {"erm", "actdiff", "rrr", "gradmask", "rrr_per_image", "actdiff_per_image",
                                  "actdiff_all_masked"}
    assert data["setting"]["positives_per_batch"] == 2  # round(208/947 * 8)
    assert all(r["ms_per_step"] > 0 and r["peak_rss_mb"] > 0 for r in data["steps"].values())
    assert data["loader"]["cache_large"]["images"] == 4 * data["loader"]["cache_small"]["images"]


def test_official_step_bench_short_prints_every_method(tmp_path):
    out = tmp_path / "official.json"
    # The test process's thread count: the script's default (2) beside the other test process oversubscribes
    # the 2 cores, which made this bench 4x slower in a suite run.
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "official_step.py"), "--short", "--batch", "8",
                             "--threads", str(THREADS), "--json", str(out)],
                            capture_output=True, text=True, timeout=HANG_S, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data["steps"]) == {"rrr", "gradmask", "actdiff"}
    for kind, row in data["steps"].items():
        assert kind in result.stdout and row["batched_ms"] > 0 and row["per_image_ms"] > 0
        assert row["loss_rel_diff"] < 1e-6  # float64: the batched step computes the per-image loop's loss


def test_gpu_check_short_mode_runs_on_cpu(tmp_path):
    """The GPU script's CPU smoke test: step ratios with and without the second-order route, packed trials,
    the throughput table dgx reproduce reads, and the loader's share."""
    import datetime as dt
    import importlib.util
    import os

    from dgx.throughput import load_table

    out, table = tmp_path / "gc.json", tmp_path / "results" / "throughput.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--short", "--out", str(out),
                             "--table", str(table)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=HANG_S, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    row = data["loader_share"]
    assert row["host_step_ms"] > 0 and row["resident_step_ms"] > 0 and row["loader_share"] < 1

    steps = {(r["method"], r["route"]): r for r in data["step_ratio"]["rows"]}
    assert set(steps) == {("erm", "-"), ("actdiff", "-"), ("rrr", "second_order"), ("rrr", "generic"),
                          ("gradmask", "second_order"), ("gradmask", "generic")}
    for r in steps.values():
        assert r["batch"] == 16 and r["img_s"] == pytest.approx(16 / (r["step_ms"] / 1000))
    ratios = data["step_ratio"]["ratios"]
    assert ratios["rrr/erm b16 second_order"] == pytest.approx(
        steps[("rrr", "second_order")]["step_ms"] / steps[("erm", "-")]["step_ms"])
    assert "rrr second-order speedup b16" in ratios

    t = json.loads(table.read_text())
    assert set(t) == {"measured", "device", "torch", "batch", "image_size", "model", "img_s", "source"}
    assert (t["device"], t["batch"], t["model"]) == ("cpu", 16, "resnet18-w16") and "--short" in t["source"]
    dt.datetime.fromisoformat(t["measured"])
    assert set(t["img_s"]) == {"erm", "actdiff", "rrr", "gradmask"}
    assert list(table.parent.iterdir()) == [table]  # written atomically: no temporary file left
    load_table(table)  # what dgx reproduce --throughput reads
    if importlib.util.find_spec("dgx.pack") is None:
        return
    packed = {(r["method"], r["k"], r["packed"]): r for r in data["packed"]["rows"] if "step_ms" in r}
    assert set(packed) == {(m, k, p) for m in ("erm", "rrr") for k, p in ((1, False), (1, True), (2, True))}
    for m in ("erm", "rrr"):  # the table holds one plain trial as "1" and the K=2 pack's aggregate as "2"
        assert t["img_s"][m]["1"] == pytest.approx(packed[(m, 1, False)]["aggregate_img_s"])
        assert t["img_s"][m]["2"] == pytest.approx(2 * 16 / (packed[(m, 2, True)]["step_ms"] / 1000))
        two = packed[(m, 2, True)]
        assert two["speedup_vs_1"] == pytest.approx(two["aggregate_img_s"] / packed[(m, 1, False)]["aggregate_img_s"])


def test_gpu_check_generic_route_leaves_out_second_order():
    """Without the second-order route, differentiable_pass runs no second_order mode; after it, it does again."""
    import importlib.util

    import torch

    from dgx.methods.rrr import differentiable_pass
    from dgx.methods.second_order import second_order

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            modes = torch.overrides._get_current_function_mode_stack()
            seen.append(any(isinstance(m, second_order) for m in modes))
            return x.flatten(1)[:, :2]

    x = torch.randn(2, 3, 4, 4)
    differentiable_pass(Probe(), x)
    with gpu_check.second_order_route(False):
        differentiable_pass(Probe(), x)
    with gpu_check.second_order_route(True):
        differentiable_pass(Probe(), x)
    differentiable_pass(Probe(), x)
    assert seen == [True, False, True, True]
