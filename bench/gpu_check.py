"""GPU check: the training loop's CUDA path (bf16 autocast, channels_last) and step throughput.

Run on a CUDA machine from the repository root, with the default decoy-cxr
cache present under ./data (build it with `dgx train erm --epochs 1` first):

    PYTHONPATH=. python bench/gpu_check.py --out results.json

Part 1 trains every method for 2 epochs through dgx.train.train on CUDA and
prints its AUROCs (checks that double backward works under bf16 autocast).
Part 2 times one optimizer step of every method on ResNet-50, 224 px, bf16,
channels_last, at batch 16 and 128, and prints images/s and peak memory.
Part 3 repeats ERM and ActDiff under torch.compile (RRR and GradMask stay
eager: torch.compile does not support their double backward).
Part 4 measures trial packing: the aggregate ERM images/s of K = 1, 2, 4
concurrent batch-16 trainings on the one GPU (`dgx sweep --trials-per-gpu K`).
Part 5 measures the loader's share of an ERM batch-16 step: the host loader against
the split held on the GPU (CXR-P-sized: 947 images of 224 px).
Target: ERM >= 3,000 img/s at batch 128 on an H100. About 4 minutes on an H200.
`--short` runs part 5 on the CPU with a tiny model: a smoke test of the script.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from dgx.data import load_dataset
from dgx.methods import build_method
from dgx.models import build_model, to_input
from dgx.train import TrainConfig, train

LAMS = {"erm": 0.0, "actdiff": 1e-3, "rrr": 1e-2, "gradmask": 1e-2}


def check_training(device: str) -> list[dict]:
    data = load_dataset("decoy-cxr", {}, 48, Path("data"))
    rows = []
    for method, lam in LAMS.items():
        cfg = TrainConfig(method=method, mask="none" if method == "erm" else "periphery", image_size=48,
                          model="resnet18", weights="none", lr=1e-3, lam=lam, epochs=2)
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            r = train(cfg, data, Path(tmp), device=device, progress=False)
        row = {"method": method, "val_auroc": r.val_auroc, "losses": [h["train_loss"] for h in r.history],
               "target_mean": sum(r.auroc[k] for k in data.targets) / len(data.targets), "wall_s": time.perf_counter() - t}
        assert all(math.isfinite(v) for v in row["losses"]), row
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


COMPILE = ("erm", "actdiff")  # RRR/GradMask need double backward, which torch.compile does not support


def step_throughput(device: str, model_name: str, size: int, batches: list[int], steps: int,
                    compiled: bool = False) -> list[dict]:
    rows = []
    for method, lam in LAMS.items():
        if compiled and method not in COMPILE:
            continue
        for bs in batches:
            torch.manual_seed(0)
            model = build_model(model_name, "none").to(device).to(memory_format=torch.channels_last)
            if compiled:
                model = torch.compile(model)
            opt = torch.optim.Adam(model.parameters(), 1e-4)
            m = build_method(method, lam)
            images = torch.randint(0, 255, (bs, 1, size, size), dtype=torch.uint8, device=device)
            # Training-shaped, as in bench/run.py: CXR-P's share of masked positives (208/947), the
            # rest negatives with all-ones masks (no penalty, no ActDiff shuffled copy).
            positives = round(208 / 947 * bs)
            masks = torch.ones(bs, 1, size, size, device=device)
            masks[:positives] = 0
            masks[:positives, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
            y = (torch.arange(bs, device=device) < positives).long()
            torch.cuda.reset_peak_memory_stats()

            def step():
                x = to_input(images).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    parts = m.loss(model, x, y, masks)
                opt.zero_grad(set_to_none=True)
                parts["loss"].backward()
                opt.step()

            try:
                for _ in range(3):
                    step()
            except Exception as exc:  # a compile failure is a result, not a crash
                print(json.dumps({"method": method, "compiled": compiled, "batch": bs, "error": repr(exc)[:300]}))
                continue
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
            dt = (time.perf_counter() - t) / steps
            row = {"method": method, "compiled": compiled, "model": model_name, "size": size, "batch": bs,
                   "step_ms": 1000 * dt,
                   "img_per_s": bs / dt, "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
            print(json.dumps(row), flush=True)
            rows.append(row)
            del model, opt
            torch.cuda.empty_cache()
    return rows


def _packed_worker(rank: int, seconds: float, queue) -> None:
    torch.manual_seed(rank)
    model = build_model("resnet50", "none").cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    m = build_method("erm", 0.0)
    images = torch.randint(0, 255, (16, 1, 224, 224), dtype=torch.uint8, device="cuda")
    y = torch.randint(0, 2, (16,), device="cuda")
    masks = torch.ones(16, 1, 224, 224, device="cuda")

    def step():
        x = to_input(images).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m.loss(model, x, y, masks)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    torch.cuda.synchronize()
    queue.put(16 * n / (time.perf_counter() - start))


def trial_packing(ks: list[int], seconds: float) -> list[dict]:
    """Aggregate ERM img/s of K concurrent batch-16 trainings on one GPU (what --trials-per-gpu K does)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for k in ks:
        queue = ctx.Queue()
        procs = [ctx.Process(target=_packed_worker, args=(r, seconds, queue)) for r in range(k)]
        for p in procs:
            p.start()
        rates = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        row = {"trials_per_gpu": k, "aggregate_img_s": sum(rates), "per_trial_img_s": rates}
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = rows[0]["aggregate_img_s"]
    for r in rows:
        r["speedup_vs_1"] = r["aggregate_img_s"] / base
    return rows


def loader_share(device: str, model_name: str, size: int, n: int, steps: int, batch: int = 16) -> dict:
    """Step time of ERM fed by the host loader against the split held on the device (dgx.data.loader.Resident):
    the loader's share of a step is 1 - resident / host."""
    import numpy as np

    from dgx.data.base import Split
    from dgx.data.loader import Resident, batches

    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 255, (n, size, size), dtype=np.uint8), (np.arange(n) % 4 == 0).astype(np.int64))
    dev = torch.device(device)
    model = build_model(model_name, "none").to(dev)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    m = build_method("erm", 0.0)
    cuda = dev.type == "cuda"

    def run(stream) -> float:
        done, start = 0, None
        for images, labels, masks in stream:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                parts = m.loss(model, to_input(images.to(dev, non_blocking=True)), labels.to(dev), masks.to(dev).float())
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            done += 1
            if done == 2:  # warm-up
                torch.cuda.synchronize() if cuda else None
                start = time.perf_counter()
            if done == steps + 2:
                break
        torch.cuda.synchronize() if cuda else None
        return (time.perf_counter() - start) / steps

    host = run(batches(split, batch, shuffle=True, seed=0, drop_last=True))
    resident = run(Resident(split, "none", "ones", dev).batches(batch, shuffle=True, seed=0, drop_last=True))
    row = {"part": "loader_share", "device": device, "model": model_name, "size": size, "batch": batch,
           "host_step_ms": 1000 * host, "resident_step_ms": 1000 * resident, "loader_share": 1 - resident / host}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--short", action="store_true", help="CPU smoke test of the script: the loader-share part only, "
                    "tiny model and images")
    args = ap.parse_args()
    if args.short:
        result = {"loader_share": loader_share("cpu", "resnet18-w16", 48, 128, 3)}
        Path(args.out).write_text(json.dumps(result, indent=1))
        return
    assert torch.cuda.is_available(), "no CUDA device"
    torch.backends.cudnn.benchmark = True
    info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    print(json.dumps(info), flush=True)
    result = {"info": info, "training": check_training("cuda"),
              "throughput": step_throughput("cuda", "resnet50", 224, [16, 128], args.steps),
              "compiled": step_throughput("cuda", "resnet50", 224, [16, 128], args.steps, compiled=True),
              "packing": trial_packing([1, 2, 4], seconds=20.0),
              "loader_share": loader_share("cuda", "resnet50", 224, 947, args.steps * 4)}
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
