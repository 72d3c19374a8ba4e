"""Is a pruned `dgx reproduce` honest? Pruners replayed on full-grid training histories, on decoy-cxr.

For each paper study (ERM; ActDiff, RRR and GradMask with abnormality masks, the masks of Table 1) and
each repetition r (decoy-cxr generated with ``seed=r``), every point of the paper's Appendix-A grid
(ERM 18 points, the others 108) is trained in full at a CPU-sized budget, and its per-epoch
source-validation AUROC, its objective (the selected checkpoint's val AUROC) and its OOD target average
are stored. A pruner's decision depends only on the values reported so far, and training is
deterministic on CPU, so each pruner (median, hyperband, asha, exactly as ``dgx.sweep.study.make_pruner``
builds them) is then *replayed* on an in-memory Optuna study with dgx's own queue: the grid is enqueued
in the order a sequential ``dgx sweep`` uses, each claimed trial reports the recorded epochs until
``should_prune()``, else completes with the recorded objective; the pick is ``_best_params`` (dgx's tie
rule). tests/test_prune_replay.py checks that the replay matches a real pruned sweep trial for trial.

Reported per study and pruner: epochs trained / full-grid epochs, how often the pruned pick is the full
grid's pick, and the gap pick(full) - pick(pruned) in AUROC points on source validation and on the OOD
target average (the number a paper table shows), in the sweep's own claim order (``plan.grid_points()``,
fixed) and in ``--orders`` shuffled orders per repetition (the fixed order is arbitrary with respect to
a dataset). Rule (the issue): pruning may become the default only if both gaps are <= 0.5 points for
every study, in every repetition and order. Only the search phase is replayed: the seeds phase is never
pruned. The replay is of a sequential sweep (one worker); with several workers the decisions also depend
on which trials finish first.

    python bench/prune_replay.py [--reps 3] [--epochs 6] [--workers 2] [--orders 10]
                                 [--json bench/results/prune_replay.json] [--report-only]

The trainings are cached point by point in the JSON file (``points``): a rerun with the same budget
resumes, and ``--report-only`` replays whatever is complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

STUDIES = (("erm", None), ("actdiff", "abnormality"), ("rrr", "abnormality"), ("gradmask", "abnormality"))
PRUNERS = ("median", "hyperband", "asha")
BUDGET = "paper"  # the Appendix-A grid; training settings are overridden below (as `dgx reproduce --model ...` would)
RULE_POINTS = 0.5


def budget_args(args) -> dict:
    """The training budget, stored with the cache: a cache with another budget is not reused."""
    return {"model": args.model, "weights": "none", "image_size": args.image_size, "epochs": args.epochs,
            "batch_size": 16, "data": {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
                                       "n_target": args.n_target}, "grid": BUDGET}


def make_plan(method: str, mask: str | None, rep: int, budget: dict):
    """The search plan `dgx reproduce --data decoy-cxr --data-opt seed=REP ...` builds for this study
    (same study name, so Hyperband assigns the same brackets)."""
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest
    from dgx.sweep.plan import study_name
    from dgx.sweep.plan import SweepPlan

    opts = [f"{k}={v}" for k, v in budget["data"].items()] + [f"seed={rep}"]
    cfg, plan_budget = resolve_config(TrainRequest(method=method, mask=mask, data="decoy-cxr", data_opts=tuple(opts or ()), budget=budget["grid"], model=budget["model"], weights=budget["weights"], image_size=budget["image_size"], epochs=budget["epochs"], batch_size=budget["batch_size"]))
    return SweepPlan(base=cfg, budget=plan_budget, study=study_name(cfg, plan_budget), storage="", seeds=1)


def train_point(base, params: dict, data, run_dir: Path) -> dict:
    """Train one grid point in full (no pruning) and return what a replay needs."""
    from dgx.train import NonFiniteLossError, train

    cfg = replace(base, **params)
    val: list[float] = []
    record = {"params": params, "run_id": cfg.run_id(data.fingerprint)}
    started = time.perf_counter()
    try:
        result = train(cfg, data, run_dir, device="cpu", progress=False,
                       on_epoch=lambda epoch, stats: val.append(float(stats["val_auroc"])))
    except NonFiniteLossError as exc:  # dgx fails the trial for good; the epochs before it were reported
        return {**record, "val": val, "failed": str(exc), "wall_s": time.perf_counter() - started}
    targets = [float(result.auroc[t]) for t in data.targets]
    return {**record, "val": [float(h["val_auroc"]) for h in result.history], "objective": float(result.val_auroc),
            "best_epoch": result.best_epoch, "target_avg": sum(targets) / len(targets),
            "source_test": float(result.auroc[data.source]), "wall_s": time.perf_counter() - started}


def replay(plan, records: dict, pruner: str, points: list[dict] | None = None) -> dict:
    """Replay ``pruner`` over ``records`` (point_key(params) -> train_point record) as a sequential sweep.

    ``points``: the claim order (default: the sweep's own, ``plan.grid_points()``); trial numbers follow it.
    Returns per trial (in trial order) its params, final state and epochs trained, the epochs in all,
    and the pick.
    """
    import optuna
    from optuna.trial import TrialState

    from dgx.sweep import queue
    from dgx.space import suggest
    from dgx.sweep.study import _best_params, make_pruner, make_sampler

    plan = replace(plan, pruner=pruner)
    study = optuna.create_study(study_name=plan.study, storage=optuna.storages.InMemoryStorage(),
                                sampler=make_sampler(plan.sampler, plan.grid), pruner=make_pruner(plan),
                                direction="maximize")
    queue.enqueue_missing(study, points if points is not None else plan.grid_points())
    trials, epochs = [], 0
    while (trial := queue.claim(study)) is not None:
        params = suggest(trial, plan.grid)
        rec = records[queue.point_key(params)]
        state, used = None, len(rec["val"])
        for epoch, value in enumerate(rec["val"], 1):
            trial.report(value, epoch)
            if trial.should_prune():
                state, used = TrialState.PRUNED, epoch
                break
        if state is None and "failed" in rec:
            state, used = TrialState.FAIL, min(len(rec["val"]) + 1, plan.base.num_epochs)  # the epoch that diverged
        if state is None:
            state = TrialState.COMPLETE
            trial.set_user_attr("run_id", rec["run_id"])  # what _best_params breaks ties with
            study.tell(trial, rec["objective"])
        else:
            study.tell(trial, state=state)
        epochs += used
        trials.append({"params": params, "state": state.name, "epochs": used})
    return {"trials": trials, "epochs": epochs, "best": _best_params(study)}


# ---- measurement -------------------------------------------------------------------------------------------------

_DATA: dict = {}


def _init_worker(data_dir: str) -> None:
    os.environ["DGX_DATA_DIR"] = data_dir
    os.environ["WANDB_MODE"] = "disabled"
    import torch

    torch.set_num_threads(1)


def _work(task: tuple) -> tuple[str, dict]:
    key, method, mask, rep, params, budget, tmp = task
    from dgx.resolve import load_data

    plan = make_plan(method, mask, rep, budget)
    data_key = (rep, plan.base.data_options)
    if data_key not in _DATA:
        _DATA.clear()
        _DATA[data_key] = load_data(plan.base)
    with tempfile.TemporaryDirectory(dir=tmp) as run_dir:
        return key, train_point(plan.base, params, _DATA[data_key], Path(run_dir))


def point_id(plan, rep: int, params: dict) -> str:
    return f"{plan.study}|rep{rep}|" + ",".join(f"{k}={v:g}" for k, v in sorted(params.items()))


def _save(path: Path, cache: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)


def measure(args, cache: dict, path: Path) -> None:
    import multiprocessing as mp

    budget = cache["budget"]
    work_dir = Path(tempfile.mkdtemp(prefix="prune-replay-"))
    data_dir = args.data_dir or str(work_dir / "data")
    _init_worker(data_dir)
    from dgx.config import get_settings
    from dgx.resolve import load_data

    get_settings.cache_clear()
    tasks = []
    for rep in range(args.reps):  # a repetition at a time, so a cut-short run leaves whole repetitions
        for method, mask in STUDIES:
            plan = make_plan(method, mask, rep, budget)
            for params in plan.grid_points():
                key = point_id(plan, rep, params)
                if key not in cache["points"]:
                    tasks.append((key, method, mask, rep, params, budget, str(work_dir)))
    print(f"{len(tasks)} trainings to run ({len(cache['points'])} cached), {args.workers} workers", flush=True)
    if not tasks:
        return
    for rep in sorted({t[3] for t in tasks}):  # generate each replica once, before the workers read it
        load_data(make_plan("erm", None, rep, budget).base)
    started, last_save, done = time.perf_counter(), time.perf_counter(), 0
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers, initializer=_init_worker, initargs=(data_dir,)) as pool:
        for key, record in pool.imap_unordered(_work, tasks, chunksize=1):
            cache["points"][key] = record
            done += 1
            if time.perf_counter() - last_save > 20 or done == len(tasks):
                _save(path, cache)
                last_save = time.perf_counter()
            if done % 25 == 0 or done == len(tasks):
                el = time.perf_counter() - started
                print(f"{done}/{len(tasks)} trainings, {el:.0f} s, eta {el / done * (len(tasks) - done):.0f} s",
                      flush=True)


# ---- analysis ----------------------------------------------------------------------------------------------------

def analyze(cache: dict, reps: int, orders: int) -> dict:
    import numpy as np

    from dgx.sweep import queue

    budget, out = cache["budget"], {"studies": {}, "orders": orders}
    for method, mask in STUDIES:
        per_rep = []
        for rep in range(reps):
            plan = make_plan(method, mask, rep, budget)
            pts = plan.grid_points()
            keys = [point_id(plan, rep, p) for p in pts]
            if not all(k in cache["points"] for k in keys):
                continue
            records = {queue.point_key(p): cache["points"][k] for p, k in zip(pts, keys)}
            full = replay(plan, records, "none")
            # The full grid's pick by hand (max objective, ties: smaller run id): the "none" replay must agree.
            done = [r for r in records.values() if "failed" not in r]
            by_hand = min(done, key=lambda r: (-r["objective"], r["run_id"]))["params"]
            assert full["best"] == by_hand, (full["best"], by_hand)
            fp = records[queue.point_key(full["best"])]
            row = {"rep": rep, "study": plan.study, "full_epochs": full["epochs"], "full_pick": full["best"],
                   "full_val": fp["objective"], "full_target_avg": fp["target_avg"],
                   "failed": sum("failed" in r for r in records.values()), "pruners": {}}
            for pruner in PRUNERS:
                orders_out = []
                for k in range(orders + 1):  # k = 0: the sweep's own order; k >= 1: shuffled orders
                    order = None if k == 0 else [pts[i] for i in np.random.default_rng(1000 * rep + k).permutation(len(pts))]
                    res = replay(plan, records, pruner, order)
                    pp = records[queue.point_key(res["best"])]
                    orders_out.append({"epochs": res["epochs"], "same": res["best"] == full["best"], "pick": res["best"],
                                       "val_gap": 100 * (fp["objective"] - pp["objective"]),
                                       "target_gap": 100 * (fp["target_avg"] - pp["target_avg"]),
                                       "pruned": sum(t["state"] == "PRUNED" for t in res["trials"])})
                row["pruners"][pruner] = {"sweep_order": orders_out[0], "shuffled": orders_out[1:]}
            per_rep.append(row)
        out["studies"][f"{method}/{mask or 'none'}"] = per_rep
    out["summary"] = summarize(out)
    return out


def _stats(rows: list[dict], full_epochs: int) -> dict:
    vg = [r["val_gap"] for r in rows]
    tg = [r["target_gap"] for r in rows]
    return {"n": len(rows), "epochs": sum(r["epochs"] for r in rows), "full_epochs": full_epochs,
            "saved_pct": 100 * (1 - sum(r["epochs"] for r in rows) / full_epochs),
            "same_pick": sum(r["same"] for r in rows),
            "val_gap_mean": float(sum(vg) / len(vg)), "val_gap_max": float(max(map(abs, vg))),
            "target_gap_mean": float(sum(tg) / len(tg)), "target_gap_max": float(max(map(abs, tg)))}


def summarize(out: dict) -> dict:
    summary: dict = {"by_study": {}, "verdict": {}}
    for study, reps in out["studies"].items():
        if not reps:
            continue
        summary["by_study"][study] = {}
        for pruner in PRUNERS:
            sweep = [r["pruners"][pruner]["sweep_order"] for r in reps]
            shuffled = [o for r in reps for o in r["pruners"][pruner]["shuffled"]]
            full = sum(r["full_epochs"] for r in reps)
            summary["by_study"][study][pruner] = {
                "sweep_order": _stats(sweep, full),
                "shuffled": _stats(shuffled, full * max(1, len(shuffled) // len(reps))) if shuffled else None}
    for pruner in PRUNERS:
        # The worst case over every replay: the sweep's own claim order on each replica, and the shuffled orders
        # (the sweep's fixed order is arbitrary with respect to a dataset, so any order is as likely a draw).
        rows = [s[pruner][kind] for s in summary["by_study"].values() for kind in ("sweep_order", "shuffled")
                if s[pruner][kind]]
        worst_val = max((r["val_gap_max"] for r in rows), default=math.nan)
        worst_target = max((r["target_gap_max"] for r in rows), default=math.nan)
        summary["verdict"][pruner] = {"within_rule": bool(rows) and worst_val <= RULE_POINTS and worst_target <= RULE_POINTS,
                                      "worst_val_gap": worst_val, "worst_target_gap": worst_target}
    passing = [p for p in PRUNERS if summary["verdict"][p]["within_rule"]]
    summary["default"] = max(passing, key=lambda p: sum(s[p]["sweep_order"]["saved_pct"]
                                                        for s in summary["by_study"].values())) if passing else "none"
    return summary


def table(out: dict) -> str:
    lines = [("| study | pruner | epochs saved | same pick | val gap mean / max | target-avg gap mean / max "
              "| shuffled orders: same pick, val gap max, target gap mean / max |"),
             "|---|---|---:|---:|---:|---:|---:|"]
    for study, by_pruner in out["summary"]["by_study"].items():
        for pruner, s in by_pruner.items():
            a, b = s["sweep_order"], s["shuffled"]
            sh = (f"{b['same_pick']}/{b['n']}, {b['val_gap_max']:.2f}, {b['target_gap_mean']:+.2f} / "
                  f"{b['target_gap_max']:.2f}") if b else "-"
            lines.append(f"| {study} | {pruner} | {a['saved_pct']:.0f}% | {a['same_pick']}/{a['n']} | "
                         f"{a['val_gap_mean']:+.2f} / {a['val_gap_max']:.2f} | "
                         f"{a['target_gap_mean']:+.2f} / {a['target_gap_max']:.2f} | {sh} |")
    lines.append("")
    lines.append("gap = full-grid pick - pruned pick, AUROC points (positive: the pruned pick is worse); max = max |gap| "
                 "over repetitions; same pick = repetitions where the pruned sweep selects the full grid's configuration; "
                 f"shuffled orders: {out['orders']} per repetition. The rule uses the worst |gap| over both.")
    for pruner, v in out["summary"]["verdict"].items():
        lines.append(f"- {pruner}: worst |gap| val {v['worst_val_gap']:.2f}, target average {v['worst_target_gap']:.2f} "
                     f"points -> {'within' if v['within_rule'] else 'NOT within'} the {RULE_POINTS} point rule")
    d = out["summary"]["default"]
    lines.append(f"default: {'--pruner ' + d if d != 'none' else 'keep the full grid (no pruner meets the rule)'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (decoy-cxr seed=0..reps-1)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--model", default="resnet18-w16")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--n-train", type=int, default=64)
    ap.add_argument("--n-val", type=int, default=128)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--n-target", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--orders", type=int, default=10, help="shuffled claim orders replayed per repetition, besides the sweep's")
    ap.add_argument("--data-dir", default="", help="where decoy-cxr replicas are cached (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/prune_replay.json"))
    ap.add_argument("--report-only", action="store_true", help="replay what the cache holds; train nothing")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    budget = budget_args(args)
    cache = {"budget": budget, "points": {}}
    if args.json.exists():
        stored = json.loads(args.json.read_text())
        if stored.get("budget") == budget:
            cache["points"] = stored.get("points", {})
            cache["measure_wall_s"] = stored.get("measure_wall_s", 0)
        else:
            print(f"{args.json} holds another budget: starting over", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not args.report_only:
        measure(args, cache, args.json)
    train_s = time.perf_counter() - started
    if args.data_dir:
        os.environ["DGX_DATA_DIR"] = args.data_dir
    out = analyze(cache, args.reps, args.orders)
    if not args.report_only:  # summed over resumed runs
        cache["measure_wall_s"] = round(cache.get("measure_wall_s", 0) + train_s)
    cache.update(result=out, train_cpu_s=round(sum(p["wall_s"] for p in cache["points"].values())))
    _save(args.json, cache)
    print(table(out))


if __name__ == "__main__":
    main()
