"""Cheaper sweeps: a pruned study against the full grid on decoy-cxr.

Runs the same grid three or four times, each in its own runs folder (so no
training is reused): once in full (no pruner), then with each pruner. For each
it prints the best source-validation AUROC and the epochs actually trained
(sum over trials of the epochs they reported). Target: a pruner reaches within
0.5 AUROC points of the full grid's best using at most 30% of its epochs.

    python bench/pruning.py [--epochs 9] [--pruners median,hyperband,asha] [--json bench/results/pruning.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

# ERM over the Appendix A learning-rate x weight-decay grid (18 points), CPU-sized training.
GRID = {"lr": [1e-4, 1e-3, 1e-2], "wd": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]}
DATA = ["n_train=192", "n_val=128", "n_test=64", "n_target=64"]


def run(pruner: str, epochs: int, root: Path) -> dict:
    from dgx.config import get_settings
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest
    from dgx.storage import open_storage
    from dgx.sweep.plan import SweepPlan
    from dgx.sweep.study import run_sweep

    os.environ["DGX_RUNS_DIR"] = str(root / f"runs-{pruner}")  # no training reused across studies
    os.environ["DGX_DATA_DIR"] = str(root / "data")
    os.environ["WANDB_MODE"] = "disabled"
    get_settings.cache_clear()
    (root / "grid.yaml").write_text(yaml.safe_dump(GRID))
    (root / "budget.yaml").write_text(yaml.safe_dump({"description": "bench", "grid": str(root / "grid.yaml"),
                                                      "seeds": 1, "train": {"model": "resnet18", "weights": "none",
                                                                            "image_size": 32, "epochs": epochs}}))
    cfg, budget = resolve_config(TrainRequest(method="erm", mask=None, data="decoy-cxr", data_opts=tuple(DATA or ()), budget=str(root / "budget.yaml")))
    from dgx.resolve import load_data

    data = load_data(cfg)
    url = f"sqlite:///{root / 'bench.db'}"
    plan = SweepPlan(base=cfg, budget=budget, study=f"prune-{pruner}", storage=url, seeds=1, pruner=pruner)
    start = time.perf_counter()
    run_sweep(plan, data, get_settings(), progress=False)
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=plan.study, storage=open_storage(url)).trials
    search = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    epochs_used = sum(len(t.intermediate_values) for t in search)
    best = max(t.value for t in search if t.state == TrialState.COMPLETE)
    return {"pruner": pruner, "best_val_auroc": best, "epochs": epochs_used, "trials": len(search),
            "pruned": sum(t.state == TrialState.PRUNED for t in search), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--pruners", default="median,hyperband,asha")
    ap.add_argument("--json", type=Path, default=Path("bench/results/pruning.json"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in ["none", *args.pruners.split(",")]:
            rows.append(run(pruner, args.epochs, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    full = rows[0]
    print(f"\n{'pruner':<10}{'best val AUROC':>16}{'Δ pts':>8}{'epochs':>8}{'% of grid':>11}{'pruned':>8}{'wall s':>8}")
    for r in rows:
        r["delta_points"] = 100 * (r["best_val_auroc"] - full["best_val_auroc"])
        r["epoch_fraction"] = r["epochs"] / full["epochs"]
        r["meets_target"] = r["delta_points"] >= -0.5 and r["epoch_fraction"] <= 0.30
        print(f"{r['pruner']:<10}{r['best_val_auroc']:>16.4f}{r['delta_points']:>8.2f}{r['epochs']:>8}"
              f"{100 * r['epoch_fraction']:>10.0f}%{r['pruned']:>8}{r['wall_s']:>8.0f}")
    print("target: within 0.5 points of the full grid's best, with <= 30% of its epochs: "
          + ", ".join(f"{r['pruner']} {'met' if r['meets_target'] else 'not met'}" for r in rows[1:]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
