"""GPU check (issue 16): every CUDA measurement in one script, at most ~8 minutes on one H200.

Run on a CUDA machine from the repository root (`bench/gpu.sh` does, writing into $OUT when set):

    PYTHONPATH=. python bench/gpu_check.py --out gpu.json --table bench/results/throughput.json

Every part is time-boxed (`--budget-s`, 420 s by default, for all of them together): a row that would
not fit is skipped and says so, and a failing row (out of memory, a compile error) prints its error
class and the script goes on. The JSON (`--out`) is rewritten after every part, so a run stopped
from outside still leaves what it measured.

1. Step ratio: every method's img/s and peak memory (torch.cuda.max_memory_allocated after a reset,
   model and optimizer included) at batch 16 and 128, ResNet-50, 224 px, bf16 autocast,
   channels_last; RRR and GradMask with the closed-form second-order route
   (dgx/methods/second_order.py, the default) and without it (PyTorch's generic double backward).
   Goal: RRR/ERM <= 3.0 at batch 128.
2. Packed trials (dgx/pack.py): K = 1, 2, 4, 8 ResNet-50s trained as one wide network at batch 16,
   for ERM, RRR and ActDiff: aggregate img/s (K x batch x steps / s), peak memory, the speedup over
   one plain model in the same loop, and RRR/ERM per packed trial. Goal: >= 4x aggregate, and
   RRR/ERM <= 3.0 per packed trial.
   Then the throughput table (`--table`, dgx/throughput.py) is written: one trial's img/s per
   method (batch 16, the second-order route) and each packed K's aggregate; `dgx reproduce
   --dry-run --throughput FILE` reads it.
3. Trial packing by processes: aggregate ERM img/s of K = 1, 2, 4 concurrent batch-16 trainings
   (`dgx sweep --trials-per-gpu K`).
4. The loader's share of an ERM batch-16 step: the host loader against the split held on the GPU
   (CXR-P-sized: 947 images of 224 px).
5. Training check: every method for 2 epochs through dgx.train.train on CUDA (resnet18, 48 px,
   decoy-cxr under ./data, generated when missing): finite losses and AUROCs under bf16.
6. CUDA graphs (one captured step: forward, backward and a capturable Adam) for ERM, RRR and GradMask
   at batch 16, then torch.compile (default mode; ERM and ActDiff only: torch.compile does not
   support the input-gradient methods' double backward) and torch.compile(mode="reduce-overhead")
   for ERM at batch 16, while time is left (a ResNet-50 compile takes about a minute).

`--short` runs parts 1, 2 and 4 and the table on the CPU with a tiny model (resnet18-w16, 32 px,
float32): the smoke test of the script (tests/test_bench.py), under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from dgx.methods import build_method
from dgx.models import build_model, to_input

LAMS = {"erm": 0.0, "actdiff": 1e-3, "rrr": 1e-2, "gradmask": 1e-2}
DOUBLE_BACKWARD = ("rrr", "gradmask")  # the methods that take the second-order route
COMPILE = ("erm", "actdiff")  # RRR/GradMask need double backward, which torch.compile does not support
ROUTES = {True: "second_order", False: "generic"}
WARMUP = 3  # untimed steps before each timed row (1 with --short)


class Clock:
    """The run's time budget: each part gets at most its cap of what is left."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def part(self, cap: float) -> Clock:
        sub = Clock(0)
        sub.end = min(self.end, time.perf_counter() + cap)
        return sub


class Unlimited(Clock):
    """--short's clock: a smoke test runs every row however slow the machine (no row skipped for time)."""

    def __init__(self) -> None:
        super().__init__(float("inf"))

    def part(self, cap: float) -> Clock:
        return self


def emit(row: dict) -> dict:
    print(json.dumps(row), flush=True)
    return row


def skipped(part: str, why: str, **what) -> dict:
    return emit({"part": part, **what, "skipped": why})


def failed(part: str, exc: BaseException, **what) -> dict:
    """A row that failed: its error class and the start of its message (one failure never stops the run)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc):
        torch.cuda.empty_cache()
    return emit({"part": part, **what, "error": type(exc).__name__, "message": str(exc)[:300]})


@contextlib.contextmanager
def second_order_route(enabled: bool):
    """With ``enabled`` False, PyTorch's generic double backward: ``second_order`` (a TorchFunctionMode) is
    replaced by ``contextlib.nullcontext`` wherever a dgx method module holds it (rrr.py imports it inside
    ``differentiable_pass``, so the module attribute is the one that counts)."""
    import dgx.methods.second_order as so

    original = so.second_order
    holders = [m for name, m in list(sys.modules.items())
               if name.startswith("dgx.methods") and getattr(m, "second_order", None) is original]
    if not enabled:
        for m in holders:
            m.second_order = contextlib.nullcontext
    try:
        yield
    finally:
        for m in holders:
            m.second_order = original


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None


def training_batch(bs: int, size: int, dev: torch.device):
    """Training-shaped, as in bench/run.py: CXR-P's share of masked positives (208/947), the rest negatives
    with all-ones masks (no penalty, no ActDiff shuffled copy)."""
    g = torch.Generator().manual_seed(bs)
    images = torch.randint(0, 255, (bs, 1, size, size), dtype=torch.uint8, generator=g).to(dev)
    positives = round(208 / 947 * bs)
    masks = torch.ones(bs, 1, size, size, device=dev)
    masks[:positives] = 0
    masks[:positives, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    y = (torch.arange(bs, device=dev) < positives).long()
    return images, y, masks


def timed_step(model, opt, method: str, bs: int, size: int, dev: torch.device, steps: int,
               warmup: int | None = None) -> tuple[float, float | None]:
    """(seconds per optimizer step, peak GiB) of ``method`` on ``model``; a packed model's (K,) loss is summed."""
    m = build_method(method, LAMS[method])
    images, y, masks = training_batch(bs, size, dev)
    cuda = dev.type == "cuda"

    def step():
        x = to_input(images)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            parts = m.loss(model, x, y, masks)
        opt.zero_grad(set_to_none=True)
        parts["loss"].sum().backward()
        opt.step()

    reset_peak(dev)
    for _ in range(WARMUP if warmup is None else warmup):
        step()
    sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return (time.perf_counter() - start) / steps, peak_gib(dev)


def plain_model(model_name: str, dev: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(model_name, "none").to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), 1e-4)


# --- part 1: step ratio, with and without the second-order route ---------------------------------------

def step_ratio(dev: torch.device, model_name: str, size: int, batches: list[int], methods: list[str], steps: int,
               clock: Clock) -> dict:
    rows = []
    for bs in batches:
        for method in methods:
            for so in ((True, False) if method in DOUBLE_BACKWARD else (True,)):
                what = {"method": method, "route": ROUTES[so] if method in DOUBLE_BACKWARD else "-", "batch": bs}
                if clock.left() < 5:
                    rows.append(skipped("step_ratio", "time budget", **what))
                    continue
                try:
                    model, opt = plain_model(model_name, dev)
                    with second_order_route(so):
                        step_s, peak = timed_step(model, opt, method, bs, size, dev, steps)
                except Exception as exc:  # an OOM at batch 128 is a result, not a crash
                    rows.append(failed("step_ratio", exc, **what))
                    continue
                finally:
                    model = opt = None
                rows.append(emit({"part": "step_ratio", **what, "model": model_name, "size": size,
                                  "step_ms": 1000 * step_s, "img_s": bs / step_s, "peak_mem_gib": peak}))
    ratios = {}
    for bs in batches:
        ms = {(r["method"], r["route"]): r["step_ms"] for r in rows if r.get("batch") == bs and "step_ms" in r}
        erm = ms.get(("erm", "-"))
        for (method, route), v in ms.items():
            if erm and method != "erm":
                ratios[f"{method}/erm b{bs}" + (f" {route}" if route != "-" else "")] = v / erm
            if route == "generic" and (method, "second_order") in ms:
                ratios[f"{method} second-order speedup b{bs}"] = v / ms[(method, "second_order")]
    emit({"part": "step_ratio", "ratios": ratios})
    return {"rows": rows, "ratios": ratios}


# --- part 2: packed trials -------------------------------------------------------------------------------

def packed_trials(dev: torch.device, model_name: str, size: int, ks: list[int], methods: list[str], bs: int,
                  steps: int, clock: Clock) -> dict:
    """Aggregate img/s of K models packed as one network (dgx/pack.py), against one plain model."""
    try:
        from dgx.pack import PackedAdam, pack_models
    except ImportError as exc:
        return {"rows": [skipped("packed", f"dgx.pack is not available ({exc})")], "table": {}}
    rows, table = [], {}
    for method in methods:
        what = {"method": method, "batch": bs}
        if clock.left() < 5:
            rows.append(skipped("packed", "time budget", **what))
            continue
        try:
            model, opt = plain_model(model_name, dev)
            step_s, peak = timed_step(model, opt, method, bs, size, dev, steps)
        except Exception as exc:
            rows.append(failed("packed", exc, **what, k=1, packed=False))
            continue
        finally:
            model = opt = None
        base = bs / step_s
        table[method] = {1: base}
        rows.append(emit({"part": "packed", **what, "k": 1, "packed": False, "step_ms": 1000 * step_s,
                          "aggregate_img_s": base, "peak_mem_gib": peak}))
        for k in ks:
            if clock.left() < 5:
                rows.append(skipped("packed", "time budget", **what, k=k))
                continue
            try:
                torch.manual_seed(0)
                packed = pack_models([build_model(model_name, "none") for _ in range(k)]).to(dev)
                if dev.type == "cuda":
                    packed = packed.to(memory_format=torch.channels_last)
                popt = PackedAdam(list(packed.parameters()), k=k)
                step_s, peak = timed_step(packed, popt, method, bs, size, dev, steps)
            except Exception as exc:
                rows.append(failed("packed", exc, **what, k=k, packed=True))
                continue
            finally:
                packed = popt = None
            agg = k * bs / step_s
            if k > 1:
                table[method][k] = agg
            rows.append(emit({"part": "packed", **what, "k": k, "packed": True, "step_ms": 1000 * step_s,
                              "aggregate_img_s": agg, "per_trial_img_s": agg / k, "speedup_vs_1": agg / base,
                              "peak_mem_gib": peak, "peak_mem_gib_per_trial": None if peak is None else peak / k}))
    per_trial = {}  # RRR/ERM step time per packed trial, at each K (goal <= 3.0)
    step = {(r["method"], r["k"]): r["step_ms"] for r in rows if r.get("packed") and "step_ms" in r}
    for (method, k), ms in step.items():
        if method != "erm" and ("erm", k) in step:
            per_trial[f"{method}/erm K={k}"] = ms / step[("erm", k)]
    emit({"part": "packed", "ratios_per_packed_trial": per_trial,
          "best_speedup": {m: max(v.values()) / v[1] for m, v in table.items()}})
    return {"rows": rows, "table": {m: {str(k): v for k, v in t.items()} for m, t in table.items()},
            "ratios_per_packed_trial": per_trial}


def throughput_table(step: dict, packed: dict, bs: int) -> dict[str, dict[int, float]]:
    """One trial's img/s (the second-order route, batch ``bs``) per method, and the packed aggregates.
    Where the packed part measured a plain model in its own loop, that is the method's "1"."""
    table: dict[str, dict[int, float]] = {}
    for r in step.get("rows", []):
        if r.get("batch") == bs and "img_s" in r and r["route"] in ("-", "second_order"):
            table.setdefault(r["method"], {})[1] = r["img_s"]
    for method, rates in packed.get("table", {}).items():
        table.setdefault(method, {}).update({int(k): v for k, v in rates.items()})
    return table


# --- part 3: trial packing by processes -------------------------------------------------------------------

def _packed_worker(rank: int, seconds: float, queue) -> None:
    try:
        dev = torch.device("cuda")
        model, opt = plain_model("resnet50", dev, seed=rank)
        m = build_method("erm", 0.0)
        images, y, masks = training_batch(16, 224, dev)

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
    except Exception as exc:
        queue.put(f"{type(exc).__name__}: {exc}"[:300])


def trial_packing(ks: list[int], seconds: float, clock: Clock) -> list[dict]:
    """Aggregate ERM img/s of K concurrent batch-16 trainings on one GPU (what --trials-per-gpu K does)."""
    import queue as queue_mod

    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    rows = []
    for k in ks:
        if clock.left() < seconds + 30:  # a spawned worker imports torch and dgx first
            rows.append(skipped("trial_packing", "time budget", trials_per_gpu=k))
            continue
        q = ctx.Queue()
        procs = [ctx.Process(target=_packed_worker, args=(r, seconds, q)) for r in range(k)]
        for p in procs:
            p.start()
        try:
            rates = [q.get(timeout=seconds + 90) for _ in procs]  # start-up, warm-up, then `seconds`
        except queue_mod.Empty:
            rates = ["timed out"]
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        errors = [r for r in rates if isinstance(r, str)]
        if errors:
            rows.append(emit({"part": "trial_packing", "trials_per_gpu": k, "error": errors[0]}))
            continue
        rows.append(emit({"part": "trial_packing", "trials_per_gpu": k, "aggregate_img_s": sum(rates),
                          "per_trial_img_s": rates}))
    done = [r for r in rows if "aggregate_img_s" in r]
    for r in done:
        r["speedup_vs_1"] = r["aggregate_img_s"] / done[0]["aggregate_img_s"]
    return rows


# --- part 4: the loader's share of a step ----------------------------------------------------------------

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
                sync(dev)
                start = time.perf_counter()
            if done == steps + 2:
                break
        sync(dev)
        return (time.perf_counter() - start) / steps

    host = run(batches(split, batch, shuffle=True, seed=0, drop_last=True))
    resident = run(Resident(split, "none", "ones", dev).batches(batch, shuffle=True, seed=0, drop_last=True))
    return emit({"part": "loader_share", "device": device, "model": model_name, "size": size, "batch": batch,
                 "host_step_ms": 1000 * host, "resident_step_ms": 1000 * resident, "loader_share": 1 - resident / host})


# --- part 5: training check --------------------------------------------------------------------------------

def check_training(device: str, clock: Clock) -> list[dict]:
    from dgx.data import load_dataset
    from dgx.spec import TrainConfig
    from dgx.train import train

    data = load_dataset("decoy-cxr", {}, 48, Path("data"))
    rows = []
    for method, lam in LAMS.items():
        if clock.left() < 10:
            rows.append(skipped("training", "time budget", method=method))
            continue
        cfg = TrainConfig(method=method, mask="none" if method == "erm" else "periphery", image_size=48,
                          model="resnet18", weights="none", lr=1e-3, lam=lam, epochs=2)
        t = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                r = train(cfg, data, Path(tmp), device=device, progress=False)
        except Exception as exc:
            rows.append(failed("training", exc, method=method))
            continue
        losses = [h["train_loss"] for h in r.history]
        rows.append(emit({"part": "training", "method": method, "val_auroc": r.val_auroc, "losses": losses,
                          "finite": all(math.isfinite(v) for v in losses),
                          "target_mean": sum(r.auroc[k] for k in data.targets) / len(data.targets),
                          "wall_s": time.perf_counter() - t}))
    return rows


# --- part 6: CUDA graphs and torch.compile -----------------------------------------------------------------

def graphed_step(method: str, model_name: str, size: int, bs: int, steps: int) -> dict:
    """One whole training step (forward, backward, capturable Adam) captured as a CUDA graph and replayed."""
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(model_name, "none").to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-4, capturable=True)
    m = build_method(method, LAMS[method])
    images, y, masks = training_batch(bs, size, dev)

    def step():
        x = to_input(images).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = m.loss(model, x, y, masks)["loss"]
        loss.backward()
        opt.step()

    reset_peak(dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graph requires
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        graph.replay()
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / steps
    return {"step_ms": 1000 * step_s, "img_s": bs / step_s, "peak_mem_gib": peak_gib(dev)}


def compiled_step(method: str, model_name: str, size: int, bs: int, steps: int, mode: str | None) -> dict:
    dev = torch.device("cuda")
    model, opt = plain_model(model_name, dev)
    model = torch.compile(model) if mode is None else torch.compile(model, mode=mode)
    step_s, peak = timed_step(model, opt, method, bs, size, dev, steps)
    return {"step_ms": 1000 * step_s, "img_s": bs / step_s, "peak_mem_gib": peak}


def graphs_and_compile(model_name: str, size: int, bs: int, steps: int, eager: dict, clock: Clock) -> list[dict]:
    """``eager``: method -> eager img/s at this batch (part 1), for the speedups."""
    rows = []
    for method in ("erm", "rrr", "gradmask"):
        what = {"method": method, "batch": bs, "kind": "cuda_graph"}
        if clock.left() < 15:
            rows.append(skipped("fast_paths", "time budget", **what))
            continue
        try:
            row = {"part": "fast_paths", **what, **graphed_step(method, model_name, size, bs, steps)}
        except Exception as exc:  # data-dependent ops or a stream sync in the step break capture
            rows.append(failed("fast_paths", exc, **what))
            continue
        if method in eager:
            row["speedup_vs_eager"] = row["img_s"] / eager[method]
        rows.append(emit(row))
    tries = [(m, None) for m in COMPILE] + [("erm", "reduce-overhead")]
    for method, mode in tries:
        what = {"method": method, "batch": bs, "kind": f"compile:{mode or 'default'}"}
        if clock.left() < 120:  # a ResNet-50 forward and backward compile takes about a minute
            rows.append(skipped("fast_paths", "time budget (a compile needs up to ~2 min)", **what))
            continue
        t = time.perf_counter()
        try:
            row = {"part": "fast_paths", **what, **compiled_step(method, model_name, size, bs, steps, mode)}
        except Exception as exc:
            rows.append(failed("fast_paths", exc, **what))
            continue
        row["wall_s"] = time.perf_counter() - t
        if method in eager:
            row["speedup_vs_eager"] = row["img_s"] / eager[method]
        rows.append(emit(row))
    return rows


# --- driver ------------------------------------------------------------------------------------------------

def write_json(path: Path, data: dict) -> None:
    """Atomically (dgx.runs.atomic_write_text: a temporary file beside ``path``, then a rename)."""
    from dgx.runs import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="every row, as JSON (rewritten after each part)")
    ap.add_argument("--table", default=None, help="the measured throughput table for dgx reproduce "
                    "(default bench/results/throughput.json; with --short, throughput_short.json beside --out)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row (after 3 warm-up steps)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="time for all parts together; rows that "
                    "would not fit are skipped")
    ap.add_argument("--short", action="store_true", help="CPU smoke test of the script: tiny model and images, "
                    "parts 1, 2, 4 and the table")
    args = ap.parse_args()
    global WARMUP
    out = Path(args.out)
    clock = Clock(args.budget_s)
    result: dict = {}

    def save(key: str, value) -> None:
        result[key] = value
        write_json(out, result)

    if args.short:
        dev, model_name, size, steps = torch.device("cpu"), "resnet18-w16", 32, 1
        WARMUP = 1
        clock = Unlimited()  # what CI checks is that every row runs, on however busy a machine
        torch.set_num_threads(1)  # a smoke test beside other work: oversubscribed threads stall each other
        batches, ks, packed_methods = [16], [1, 2], ["erm", "rrr"]
        table_path = Path(args.table) if args.table else out.with_name("throughput_short.json")
        info = {"device": "cpu", "torch": torch.__version__, "short": True}
    else:
        assert torch.cuda.is_available(), "no CUDA device (use --short for the CPU smoke test)"
        torch.backends.cudnn.benchmark = True
        dev, model_name, size, steps = torch.device("cuda"), "resnet50", 224, args.steps
        batches, ks, packed_methods = [16, 128], [1, 2, 4, 8], ["erm", "rrr", "actdiff"]
        table_path = Path(args.table) if args.table else Path("bench/results/throughput.json")
        info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    save("info", emit({"part": "info", **info, "budget_s": args.budget_s}))

    save("step_ratio", step_ratio(dev, model_name, size, batches, list(LAMS), steps, clock.part(150)))
    save("packed", packed_trials(dev, model_name, size, ks, packed_methods, 16, steps, clock.part(150)))

    from dgx.throughput import write_table

    img_s = throughput_table(result["step_ratio"], result["packed"], 16)
    if img_s:
        write_table(table_path, measured=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    device=info["device"], img_s=img_s, torch=torch.__version__, image_size=size, model=model_name,
                    source=("bench/gpu_check.py --short (CPU smoke test, not a measurement)" if args.short else
                            "bench/gpu_check.py: bf16 autocast, channels_last, batch 16; \"1\": one trial alone "
                            "(RRR and GradMask through the second-order route), \"K\": K trials packed as one "
                            "network (dgx/pack.py), aggregate"))
        save("table", emit({"part": "table", "path": str(table_path), "img_s": img_s}))

    if args.short:
        save("loader_share", loader_share("cpu", model_name, 32, 64, 2))
        return
    eager = {r["method"]: r["img_s"] for r in result["step_ratio"]["rows"]
             if r.get("batch") == 16 and "img_s" in r and r["route"] in ("-", "second_order")}
    later = {"trial_packing": lambda: trial_packing([1, 2, 4], 10.0, clock.part(90)),
             "loader_share": lambda: loader_share("cuda", model_name, size, 947, steps * 2),
             "training": lambda: check_training("cuda", clock.part(60)),
             "fast_paths": lambda: graphs_and_compile(model_name, size, 16, steps, eager, clock)}
    for part, run in later.items():
        try:
            save(part, run())
        except Exception as exc:  # one part's failure never stops the others
            save(part, failed(part, exc))
    emit({"part": "done", "left_s": clock.left()})


if __name__ == "__main__":
    main()
