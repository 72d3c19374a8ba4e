"""Replicated evidence on a generated benchmark: calibrate on ERM and the oracle, evaluate methods once.

Two modes, following sweeps/protocol.yaml:

``calibrate``
    ERM and the oracle (ERM on the source with the shortcut decorrelated) on every calibration draw, one
    training each, at the budget and data options given; prints their AUROCs per draw and checks the
    protocol's criteria. No other method is trained.
``evaluate``
    On every evaluation draw: the whole λ grid of every method × mask (one search per draw, seed 0 of that
    draw), each selection rule's pick (dgx.selection.pick, source validation only), ERM and the oracle.
    Prints, per rule, the target average of each method × mask over the draws (mean ± 95% CI), its paired
    difference to ERM (CI, p, the draws where it is > 0), periphery − abnormality, and the selection regret
    (best grid point's target average − the pick's; targets are the yardstick only).

Every training is a dgx run folder under ``--runs`` (default bench/results/replicates/runs), so a rerun
resumes and a finished point costs nothing. Two worker processes with one torch thread each.

    python bench/replicates.py calibrate [--dataset decoy-cxr] [--draws 100-104] [--data-opt K=V ...] [--epochs N]
    python bench/replicates.py evaluate [--dataset decoy-cxr] [--draws 1000-1004] [--methods rrr,actdiff,gradmask]
                                        [--masks abnormality,scaled,periphery] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def draw_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def protocol(dataset: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "sweeps" / "protocol.yaml").read_text())[dataset]


def base_config(args, method: str, mask: str | None, draw: int, oracle: bool = False):
    """The TrainConfig `dgx sweep METHOD --mask MASK --data DATASET --data-opt seed=DRAW ...` trains at seed 0."""
    from dgx.data import oracle_options
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest

    opts = [*args.data_opt, f"seed={draw}"]
    cfg, budget = resolve_config(TrainRequest(method=method, mask=mask, data=args.dataset, data_opts=tuple(opts or ()), budget=args.budget, model=args.model, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size))
    if oracle:
        cfg = replace(cfg, data_options=oracle_options(cfg.dataset, cfg.data_options))
    return cfg, budget


def _train(job: dict) -> dict:
    """One training in a worker (one torch thread): its numbers, from its run folder when already done."""
    import torch

    from dgx.resolve import load_data
    from dgx.spec import TrainConfig
    from dgx.train import train

    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(job["config"])
    data = load_data(cfg)
    started = time.perf_counter()
    result = train(cfg, data, Path(job["runs"]) / cfg.run_id(data.fingerprint), progress=False)
    from dgx.runs import SCORES, load_scores

    targets = [result.auroc[t] for t in data.targets]
    scores = load_scores(Path(job["runs"]) / cfg.run_id(data.fingerprint) / SCORES)
    accuracy = [float(((s > 0.5) == (y == 1)).mean()) for t, (y, s) in scores.items() if t in data.targets]
    return {**job["meta"], "source": result.auroc[data.source], "target": float(sum(targets) / len(targets)),
            "target_acc": float(sum(accuracy) / len(accuracy)),
            "val": result.val_auroc, "val_low": result.val_auroc_low, "shuffled": result.val_shuffled_auroc,
            "swapped": result.val_swapped_auroc,
            "lam": cfg.lam, "run_id": cfg.run_id(data.fingerprint), "wall_s": time.perf_counter() - started}


def run_jobs(jobs: list[dict], workers: int) -> list[dict]:
    out, started = [], time.perf_counter()
    with mp.get_context("spawn").Pool(workers, initializer=_quiet) as pool:
        for i, row in enumerate(pool.imap_unordered(_train, jobs), 1):
            out.append(row)
            print(f"  [{i}/{len(jobs)} {time.perf_counter() - started:5.0f} s] {row['label']} draw {row['draw']}: "
                  f"source {100 * row['source']:.1f}, target {100 * row['target']:.1f} "
                  f"(accuracy {100 * row['target_acc']:.1f}), val {100 * row['val']:.1f}"
                  + (f", shuffled {100 * row['shuffled']:.1f}, swapped {100 * row['swapped']:.1f}"
                     if math.isfinite(row["shuffled"]) else ""),
                  flush=True)
    return out


def _quiet() -> None:
    import logging

    logging.getLogger("dgx").setLevel(logging.WARNING)


def _job(args, cfg, **meta) -> dict:
    config = cfg.to_dict()
    return {"config": config, "runs": str(args.runs), "meta": meta}


def pregenerate(args, draws: list[int], oracle: bool) -> None:
    """Generate every draw once, here, before the workers read them (two workers would build one twice)."""
    from dgx.resolve import load_data

    started = time.perf_counter()
    for draw in draws:
        for variant in (False, True) if oracle else (False,):
            load_data(base_config(args, "erm", None, draw, oracle=variant)[0])
    print(f"data: {len(draws)} draws ready in {time.perf_counter() - started:.0f} s", flush=True)


def calibrate(args) -> dict:
    draws = draw_range(args.draws or "-".join(map(str, protocol(args.dataset)["calibration"])))
    pregenerate(args, draws, oracle=True)
    jobs = []
    for draw in draws:
        for oracle in (False, True):
            cfg, _ = base_config(args, "erm", None, draw, oracle)
            jobs.append(_job(args, cfg, label="oracle" if oracle else "ERM", draw=draw))
    rows = run_jobs(jobs, args.workers)
    crit = protocol(args.dataset)["criteria"]
    by = {(r["label"], r["draw"]): r for r in rows}
    print("\n| draw | ERM source | ERM target avg | oracle target avg | headroom |\n|---|---:|---:|---:|---:|")
    erm_t, heads, erm_s = [], [], []
    for draw in draws:
        e, o = by[("ERM", draw)], by[("oracle", draw)]
        erm_t.append(e["target"]), heads.append(o["target"] - e["target"]), erm_s.append(e["source"])
        print(f"| {draw} | {100 * e['source']:.1f} | {100 * e['target']:.1f} | {100 * o['target']:.1f} | "
              f"{100 * (o['target'] - e['target']):+.1f} |")
    checks = {
        "erm_source_min": min(erm_s) >= crit.get("erm_source_min", 0),
        "erm_target_max": max(erm_t) <= crit.get("erm_target_max", 1),
        "erm_target_mean_max": sum(erm_t) / len(erm_t) <= crit.get("erm_target_mean_max", 1),
        "headroom_min": min(heads) >= crit.get("headroom_min", -1),
    }
    print(f"mean: ERM target {100 * sum(erm_t) / len(erm_t):.1f}, headroom {100 * sum(heads) / len(heads):+.1f}; "
          + ", ".join(f"{k} {'pass' if ok else 'FAIL'}" for k, ok in checks.items()))
    return {"mode": "calibrate", "rows": rows, "checks": checks}


def evaluate(args) -> dict:
    from dgx.selection import RULES, Candidate, pick
    from dgx.stats import mean_ci, paired_difference

    draws = draw_range(args.draws or f"{protocol(args.dataset)['evaluation'][0]}-{protocol(args.dataset)['evaluation'][0] + 4}")
    pregenerate(args, draws, oracle=True)
    jobs = []
    for draw in draws:
        for oracle in (False, True):
            cfg, _ = base_config(args, "erm", None, draw, oracle)
            jobs.append(_job(args, cfg, label="oracle" if oracle else "ERM", method="oracle" if oracle else "erm",
                             mask="none", draw=draw))
        for method in args.methods.split(","):
            for mask in args.masks.split(","):
                cfg, budget = base_config(args, method, mask, draw)
                for point in budget.points(method):
                    jobs.append(_job(args, replace(cfg, **point), label=f"{method}/{mask} λ={point['lam']:g}",
                                     method=method, mask=mask, draw=draw))
    rows = run_jobs(jobs, args.workers)
    base = {(r["method"], r["draw"]): r["target"] for r in rows if r["mask"] == "none"}
    picks: dict[tuple, dict] = {}
    for method in args.methods.split(","):
        for mask in args.masks.split(","):
            for draw in draws:
                grid = sorted((r for r in rows if (r["method"], r["mask"], r["draw"]) == (method, mask, draw)),
                              key=lambda r: r["run_id"])
                cands = [Candidate(r["run_id"], r["lam"], r["val"], r["val_low"], r["shuffled"], r["swapped"])
                         for r in grid]
                best = max(r["target"] for r in grid)
                for rule in RULES:
                    chosen = grid[pick(cands, rule)]
                    picks[(rule, method, mask, draw)] = {"target": chosen["target"], "lam": chosen["lam"],
                                                         "regret": best - chosen["target"], "source": chosen["source"]}
    erm = [base[("erm", d)] for d in draws]
    oracle = [base[("oracle", d)] for d in draws]
    m, h, _ = mean_ci(erm)
    mo, ho, _ = mean_ci(oracle)
    print(f"\nevaluation draws {draws[0]}-{draws[-1]} ({len(draws)} replicates: a draw and an init each)")
    print(f"ERM target average {100 * m:.1f} ± {100 * h:.1f}; oracle {100 * mo:.1f} ± {100 * ho:.1f}")
    summary = []
    for rule in RULES:
        print(f"\nrule {rule}: target average (mean ± 95% CI over draws), Δ vs ERM (paired t), draws with Δ > 0, "
              "λ picked, regret")
        print("| method | mask | target avg | Δ vs ERM | p | Δ > 0 | λ picked | regret |\n|---|---|---:|---:|---:|---:|---|---:|")
        for method in args.methods.split(","):
            for mask in args.masks.split(","):
                vals = [picks[(rule, method, mask, d)]["target"] for d in draws]
                mean, half, _ = mean_ci(vals)
                diff, dhalf, n, p = paired_difference(vals, erm)
                above = sum(v > e for v, e in zip(vals, erm))
                lams = "/".join(f"{picks[(rule, method, mask, d)]['lam']:g}" for d in draws)
                regret = sum(picks[(rule, method, mask, d)]["regret"] for d in draws) / len(draws)
                print(f"| {method} | {mask} | {100 * mean:.1f} ± {100 * half:.1f} | {100 * diff:+.1f} ± {100 * dhalf:.1f} "
                      f"| {p:.3g} | {above}/{n} | {lams} | {100 * regret:.1f} |")
                summary.append({"rule": rule, "method": method, "mask": mask, "target": vals, "diff": diff,
                                "diff_half": dhalf, "p": p, "above": above, "regret": regret})
        for method in args.methods.split(","):
            if {"periphery", "abnormality"} <= set(args.masks.split(",")):
                per = [picks[(rule, method, "periphery", d)]["target"] for d in draws]
                abn = [picks[(rule, method, "abnormality", d)]["target"] for d in draws]
                diff, dhalf, n, p = paired_difference(per, abn)
                print(f"- {method}: periphery − abnormality {100 * diff:+.1f} ± {100 * dhalf:.1f} (p={p:.3g})")
    return {"mode": "evaluate", "draws": draws, "rows": rows, "erm": erm, "oracle": oracle, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("calibrate", "evaluate"))
    ap.add_argument("--dataset", default="decoy-cxr")
    ap.add_argument("--draws", default=None, help="e.g. 100-104 (default: the protocol's block)")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--data-opt", action="append", default=[])
    ap.add_argument("--model", default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--methods", default="rrr,actdiff,gradmask")
    ap.add_argument("--masks", default="abnormality,scaled,periphery")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=Path, default=ROOT / "bench" / "results" / "replicates" / "runs")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("DGX_DATA_DIR", str(ROOT / "bench" / "results" / "replicates" / "data"))
    args.runs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    out = calibrate(args) if args.mode == "calibrate" else evaluate(args)
    out["wall_s"] = time.perf_counter() - started
    print(f"\n{args.mode} took {out['wall_s']:.0f} s", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**out, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
