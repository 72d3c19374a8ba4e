"""Two trainings at once on this machine: torch's default threads against dgx's fair share (dgx/threads.py).

Two sweeps started side by side on a 2-core machine each train one RRR (periphery) trial at a time. Before
dgx set thread counts, each process took torch's default (one thread per core: 2 + 2 threads on 2 cores);
dgx now gives each training its fair share (cores ÷ trainings running here: 1 each). This bench runs the
same two trainings concurrently under both settings, side by side in one run, and prints seconds per
optimizer step for each process, and the ratio.

    python bench/threads.py             # about 1.5 minutes on 2 idle cores
    python bench/threads.py --steps 128 # longer trainings, steadier numbers

"before" pins DGX_THREADS to the core count in each process, which is what torch's default gave; "after"
leaves DGX_THREADS at 0 (the fair share). A third row, one training alone at the fair share, is the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4  # the fair share is rechecked every epoch (a training that starts first sees itself alone)


def _config(steps: int):
    from dgx.resolve import resolve_config
    from dgx.spec import TrainRequest

    n_train = steps * 16 // EPOCHS
    opts = [f"n_train={n_train}", "n_val=64", "n_test=64", "n_target=64", "seed=1000"]
    cfg, _ = resolve_config(TrainRequest(method="rrr", mask="periphery", data="decoy-cxr", data_opts=tuple(opts or ()), budget="quick", epochs=EPOCHS))
    return cfg


def child(steps: int, out: Path) -> None:
    """One training; prints its seconds per step and the threads it ran with."""
    import torch

    from dgx.resolve import load_data
    from dgx.train import train

    cfg = _config(steps)
    data = load_data(cfg)
    seen = []  # the threads the training ran with, read at each epoch's end
    started = time.perf_counter()
    train(cfg, data, out, device="cpu", progress=False, on_epoch=lambda epoch, stats: seen.append(torch.get_num_threads()))
    wall = time.perf_counter() - started
    print(json.dumps({"s_per_step": wall / steps, "threads": "/".join(map(str, seen))}))


def _run(n: int, steps: int, threads: str, tmp: Path, tag: str) -> list[dict]:
    env = {**os.environ, "DGX_THREADS": threads, "DGX_DATA_DIR": str(tmp / "data"), "WANDB_MODE": "disabled"}
    env.pop("OMP_NUM_THREADS", None)
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "--steps", str(steps), "--out",
                               str(tmp / f"{tag}-{i}")], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for i in range(n)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64, help="optimizer steps per training (batch 16), over 4 epochs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.steps, args.out)
        return
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["DGX_DATA_DIR"] = str(tmp / "data")
        from dgx.resolve import load_data

        load_data(_config(args.steps))  # the draw, generated once before the processes race for it
        rows = {"before: 2 trainings, torch default threads": _run(2, args.steps, str(cores), tmp, "before"),
                "after: 2 trainings, fair share": _run(2, args.steps, "0", tmp, "after"),
                "floor: 1 training alone, fair share": _run(1, args.steps, "0", tmp, "alone")}
    print(f"RRR (periphery) at 48 px, resnet18-w16, batch 16, {args.steps} steps per training, {cores} cores")
    print(f"{'setting':46} {'threads per epoch, each process':>32} {'s/step (each process)':>24}")
    for name, results in rows.items():
        per = ", ".join(f"{r['s_per_step']:.3f}" for r in results)
        print(f"{name:46} {' + '.join(r['threads'] for r in results):>32} {per:>24}")
    before = statistics.mean(r["s_per_step"] for r in rows["before: 2 trainings, torch default threads"])
    after = statistics.mean(r["s_per_step"] for r in rows["after: 2 trainings, fair share"])
    print(f"ratio before/after (mean s/step): {before / after:.2f}×")


if __name__ == "__main__":
    main()
