"""bench/prune_replay.py replays pruners on full-grid training histories instead of retraining: it is only
honest if the replay prunes exactly the trials a real pruned `dgx sweep` prunes, at the same epochs, and
selects the same configuration. Checked here on a tiny 6-point grid, 3 epochs, for every pruner."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from dgx.config import get_settings
from dgx.sweep import queue
from tests.helpers import TINY_DATA

GRID_6 = {"lr": [1e-4, 1e-3, 1e-2], "wd": [0.0, 1e-3]}  # ERM: 6 points
EPOCHS = 3


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "prune_replay.py"
    spec = importlib.util.spec_from_file_location("prune_replay", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plan(tmp_path: Path):
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest
    from dgx.sweep.plan import SweepPlan

    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID_6))
    budget = tmp_path / "budget.yaml"
    budget.write_text(yaml.safe_dump({"description": "test", "grid": str(tmp_path / "grid.yaml"), "seeds": 1,
                                      "train": {"model": "resnet18-w16", "weights": "none", "image_size": 32,
                                                "epochs": EPOCHS}}))
    cfg, plan_budget = resolve_config(TrainRequest(method="erm", mask=None, data="decoy-cxr", data_opts=tuple([f"{k}={v}" for k, v in TINY_DATA.items()] or ()), budget=str(budget)))
    return SweepPlan(base=cfg, budget=plan_budget, study="replay-erm", storage="", seeds=1)


def test_replay_prunes_the_same_trials_at_the_same_epochs_as_a_real_pruned_sweep(tmp_path, monkeypatch):
    from dataclasses import replace

    import torch

    from dgx.resolve import load_data
    from dgx.sweep.study import _best_params, run_sweep

    torch.set_num_threads(1)  # tiny models: 2 threads on a busy 2-core machine are ~50x slower, not faster
    bench = _bench()
    plan = _plan(tmp_path)
    data = load_data(plan.base)
    # The bench's full-grid histories: every point trained to the end, in its own runs folder.
    records = {queue.point_key(p): bench.train_point(plan.base, p, data, tmp_path / "full" / str(i))
               for i, p in enumerate(plan.grid_points())}
    assert all(len(r["val"]) == EPOCHS and "failed" not in r for r in records.values())

    n_pruned = {}
    for pruner in ("asha", "median", "hyperband"):
        # A real pruned sweep (fresh runs folder: finished run folders would be reused, and not pruned).
        monkeypatch.setenv("DGX_RUNS_DIR", str(tmp_path / f"runs-{pruner}"))
        get_settings.cache_clear()
        url = f"sqlite:///{tmp_path / f'{pruner}.db'}"
        real_plan = replace(plan, storage=url, pruner=pruner)
        run_sweep(real_plan, data, get_settings(), progress=False)
        search = optuna.load_study(study_name=plan.study, storage=url)
        real = sorted(search.get_trials(deepcopy=False), key=lambda t: t.number)

        replayed = bench.replay(plan, records, pruner)
        assert [(t.params, t.state.name, len(t.intermediate_values)) for t in real] == \
               [(t["params"], t["state"], t["epochs"]) for t in replayed["trials"]], pruner
        for t in real:  # the values it pruned on are the full runs' first epochs, bit for bit
            rec = records[queue.point_key(t.params)]
            assert [t.intermediate_values[e] for e in sorted(t.intermediate_values)] == rec["val"][: len(t.intermediate_values)]
            if t.state == TrialState.COMPLETE:
                assert t.value == rec["objective"] and t.user_attrs["run_id"] == rec["run_id"]
        assert _best_params(search) == replayed["best"], pruner
        assert replayed["epochs"] == sum(len(t.intermediate_values) for t in real)
        n_pruned[pruner] = sum(t.state == TrialState.PRUNED for t in real)
        # the seeds phase of the real sweep trained the pick and pruned nothing
        seeds = optuna.load_study(study_name=f"{plan.study}.seeds", storage=url).trials
        assert [t.state for t in seeds] == [TrialState.COMPLETE]
        assert {k: v for k, v in seeds[0].params.items() if k != "seed"} == replayed["best"]

    assert n_pruned["asha"] >= 1, n_pruned  # else the comparison would show nothing
    print("pruned trials of 6:", n_pruned)
    # Without a pruner the replay is the full grid, and it picks what the full grid picks.
    full = bench.replay(plan, records, "none")
    assert full["epochs"] == len(records) * EPOCHS
    best = min(records.values(), key=lambda r: (-r["objective"], r["run_id"]))
    assert full["best"] == best["params"]
