"""How long `dgx report` takes on a storage with many finished trials (target: 10,000 in under 3 s).

Builds a SQLite storage with N COMPLETE trials carrying the user attrs `dgx sweep`
writes (7 method/mask groups x 1 dataset, seeds phase, 5 domains each), then
times load_runs and each table shape, several repeats, and prints the numbers.

    python bench/report_speed.py [--trials 10000] [--repeats 3] [--json bench/results/report_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from dgx.report import load_runs
from dgx.report.tables import Baseline, build, render

optuna.logging.set_verbosity(optuna.logging.WARNING)
GROUPS = [("erm", "none"), ("actdiff", "abnormality"), ("actdiff", "scaled"), ("actdiff", "periphery"),
          ("rrr", "abnormality"), ("rrr", "scaled"), ("rrr", "periphery")]
DOMAINS = ["cxr-p", "mimic-cxr", "chexpert", "chexpert-age", "chestx-ray8-age"]


def fill(url: str, n: int) -> float:
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    per_group = -(-n // len(GROUPS))
    for method, mask in GROUPS:
        study = optuna.create_study(study_name=f"{method}-{mask}.seeds", storage=url, direction="maximize")
        trials = []
        for seed in range(per_group):
            auroc = dict(zip(DOMAINS, map(float, 0.6 + 0.3 * rng.random(len(DOMAINS)))))
            attrs = {"method": method, "mask": mask, "dataset": "cxr-p", "source": "cxr-p", "targets": DOMAINS[1:],
                     "phase": "seeds", "seed": seed, "auroc": auroc, "val_auroc": 0.9, "run_id": f"{seed:016x}",
                     "config": {"lr": 1e-4, "wd": 0.0, "lam": 0.1, "seed": seed}}
            trials.append(create_trial(value=0.9, params={"lr": 1e-4}, user_attrs=attrs,
                                       distributions={"lr": FloatDistribution(1e-5, 1e-2, log=True)}))
        study.add_trials(trials)
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("bench/results/report_speed.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/report.db"
        fill_s = fill(url, args.trials)
        timings: dict[str, list[float]] = {"load_runs": [], "table1": [], "table2": [], "table3": [],
                                           "table1+paired": [], "total": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            runs = load_runs(url)
            t1 = time.perf_counter()
            timings["load_runs"].append(t1 - t0)
            for shape in ("1", "2", "3"):
                s = time.perf_counter()
                render(build(runs, shape), "markdown")
                timings[f"table{shape}"].append(time.perf_counter() - s)
            s = time.perf_counter()
            render(build(runs, "1", baseline=Baseline("erm")), "markdown")
            timings["table1+paired"].append(time.perf_counter() - s)
            timings["total"].append(time.perf_counter() - t0)
        n_trials = runs[["study", "trial"]].drop_duplicates().shape[0]
        # The whole command, as a user runs it: interpreter start, imports, query, table.
        cli = []
        for _ in range(args.repeats):
            s = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dgx", "report", "--storage", url], check=True,
                           stdout=subprocess.DEVNULL)
            cli.append(time.perf_counter() - s)
        timings["dgx report (CLI)"] = cli
    best = {k: min(v) for k, v in timings.items()}
    print(f"report speed: {n_trials:,} finished trials, {len(DOMAINS)} domains each (SQLite; fill took {fill_s:.1f} s)")
    print(f"{'step':<18}{'best of ' + str(args.repeats) + ' (s)':>18}")
    for k, v in best.items():
        print(f"{k:<18}{v:>18.3f}")
    print(f"target: load + Tables 1, 2, 3 (+ paired stats) < 3 s -> {'met' if best['total'] < 3 else 'NOT met'}; "
          f"the whole `dgx report` command: {best['dgx report (CLI)']:.2f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"trials": n_trials, "best_s": best, "all_s": timings, "cpus": os.cpu_count()},
                                    indent=1))


if __name__ == "__main__":
    main()
