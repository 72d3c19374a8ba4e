"""The main job's default budget: gpu where `dgx sweep` trains on CUDA and no --budget is named, else quick.

No test trains on a GPU: torch.cuda.is_available is monkeypatched, and the CLI test replaces the sweep itself.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from dgx.cli import app
from dgx.cli.sweep import default_budget


@pytest.fixture
def cuda(monkeypatch):
    def set_available(value: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: value)

    return set_available


def test_cuda_and_no_budget_named_picks_gpu_and_says_why(cuda):
    cuda(True)
    name, why = default_budget(None, "auto")
    assert name == "gpu" and why == "CUDA available, no --budget named; --budget quick for the CPU default"


def test_no_cuda_keeps_quick(cuda):
    cuda(False)
    assert default_budget(None, "auto") == ("quick", "no CUDA device, no --budget named; --budget gpu for the GPU default")


@pytest.mark.parametrize("budget", ["quick", "paper", "my-budget.yaml"])
def test_a_named_budget_wins_on_a_gpu(cuda, budget):
    cuda(True)
    assert default_budget(budget, "auto") == (budget, "")
    assert default_budget(budget, "cuda:0") == (budget, "")


def test_the_device_flags_decide_before_torch_is_asked(cuda):
    cuda(True)
    assert default_budget(None, "cpu")[0] == "quick"  # --device cpu on a GPU machine trains on the CPU
    cuda(False)
    name, why = default_budget(None, "cuda:1")
    assert name == "gpu" and why.startswith("--device cuda:1 trains on CUDA")
    name, why = default_budget(None, "auto", gpus="0,1")
    assert name == "gpu" and why.startswith("--gpus 0,1")


def test_the_gpu_budget_is_resnet50_from_scratch_at_128px():
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest
    from dgx.space import load_budget

    budget = load_budget("gpu")
    assert "CUDA" in budget.description and "resnet50" in budget.description
    cfg, _ = resolve_config(TrainRequest(method="rrr", mask="periphery", data="decoy-cxr", budget="gpu"))
    assert (cfg.model, cfg.weights, cfg.image_size, cfg.num_epochs) == ("resnet50", "none", 128, 20)
    # λ sized for resnet50 at 128 px (sweeps/grids/gpu.yaml), far below quick's resnet18-w16 values
    quick = load_budget("quick")
    for method in ("rrr", "actdiff", "gradmask"):
        assert max(budget.grid_for(method)["lam"]) < min(quick.grid_for(method)["lam"])
        assert len(budget.points(method)) == len(quick.points(method)) == 2


@pytest.mark.parametrize("available,args,budget,announced", [
    (True, [], "gpu", True),
    (False, [], "quick", False),
    (True, ["--budget", "quick"], "quick", False),
    (True, ["--device", "cpu"], "quick", False),
])
def test_the_sweep_announces_the_gpu_default(cuda, monkeypatch, available, args, budget, announced):
    import dgx.sweep.command

    cuda(available)
    seen = {}

    def fake_sweep(req):  # the sweep's plan and header come after the budget is resolved
        seen["req"] = req
        return "table"

    monkeypatch.setattr(dgx.sweep.command, "sweep", fake_sweep)
    result = CliRunner().invoke(app, ["sweep", "rrr", "--mask", "periphery", *args])
    assert result.exit_code == 0, result.output
    assert seen["req"].train.budget == budget
    note = "CUDA available, no --budget named; --budget quick for the CPU default"
    assert (seen["req"].budget_note == note) is announced, seen


def test_the_header_announces_the_chosen_budget(tmp_path):
    from types import SimpleNamespace

    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest
    from dgx.sweep.command import _header
    from dgx.sweep.plan import SweepPlan
    from tests.helpers import tiny_config, tiny_data

    cfg, budget = resolve_config(TrainRequest(method="rrr", mask="periphery", data="decoy-cxr", budget="quick"))
    plan = SweepPlan(base=cfg, budget=budget, study="s", storage="sqlite://", pack=4)
    settings = SimpleNamespace(resolved_wandb_mode=lambda: "offline")
    spec = SimpleNamespace(parallel=False)
    text = _header("s", budget, cfg, tiny_data(tmp_path, tiny_config()), [plan], "sqlite://", settings, spec,
                   "no CUDA device, no --budget named; --budget gpu for the GPU default")
    lines = text.splitlines()
    assert lines[1] == "  budget quick chosen: no CUDA device, no --budget named; --budget gpu for the GPU default"
    assert any("packs of up to 4 grid points" in line for line in lines)


def test_sweep_pack_reaches_the_sweep(cuda, monkeypatch):
    import dgx.sweep.command

    cuda(False)
    seen = {}
    monkeypatch.setattr(dgx.sweep.command, "sweep", lambda req: seen.update(req=req) or "table")
    assert CliRunner().invoke(app, ["sweep", "rrr", "--mask", "periphery", "--pack", "3"]).exit_code == 0
    assert seen["req"].pack == 3
    assert CliRunner().invoke(app, ["sweep", "rrr", "--mask", "periphery"]).exit_code == 0
    assert seen["req"].pack == 1
