"""The benchmark suite runs in CI's environment (short mode, small model) and prints every ratio.

No timing is asserted here: the numbers are the benchmark's output, not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_short_prints_all_ratios(tmp_path):
    # 64 px: the per-image baselines run train-mode batch norm on one image, which needs > 1 value per
    # channel in the last stage (a 32 px input leaves 1x1 there).
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--short", "--model", "resnet18",
                             "--size", "64", "--batch", "8", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
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
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "official_step.py"), "--short", "--batch", "8",
                             "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data["steps"]) == {"rrr", "gradmask", "actdiff"}
    for kind, row in data["steps"].items():
        assert kind in result.stdout and row["batched_ms"] > 0 and row["per_image_ms"] > 0
        assert row["loss_rel_diff"] < 1e-6  # float64: the batched step computes the per-image loop's loss


def test_gpu_check_short_mode_runs_on_cpu(tmp_path):
    """The GPU script's CPU smoke test: its loader-share part, host loader against device-resident data."""
    import os

    out = tmp_path / "gc.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--short", "--out", str(out)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(out.read_text())["loader_share"]
    assert row["host_step_ms"] > 0 and row["resident_step_ms"] > 0 and row["loader_share"] < 1
