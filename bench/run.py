"""dgx benchmark suite: one command, a table on stdout, JSON on disk.

    python bench/run.py            # full: resnet50, 64 px, batch 16, CPU (the issue's setting)
    python bench/run.py --short    # CI: fewer steps, a smaller loader set, two processes at a time

What it measures (each in its own subprocess, so peak memory is per measurement):

- step time (forward + backward + Adam step) of ERM, ActDiff, RRR and GradMask,
  and their ratios to ERM, measured side by side in one run, on a training-shaped
  batch: CXR-P's share of masked positives (208/947, so 4 of 16), the rest
  negatives with all-ones masks; ActDiff also with every image masked
  (``actdiff_all_masked``, its worst case);
- the per-image reference RRR and ActDiff (a forward pass and attribution loss
  per image, as the paper's public code does; dgx.methods.reference) on the
  same model and inputs, and dgx's speedup over them;
- loader throughput: memory-mapped uint8 cache -> normalized float batches at
  224 px, resident memory at two dataset sizes (flat = memory-mapped), and the
  speedup over decoding PNG files per sample;
- peak resident memory of each.

The default main job's end-to-end time is `bench/main_job.sh` (minutes; not run here).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEP_METHODS = ("erm", "actdiff", "rrr", "gradmask", "rrr_per_image", "actdiff_per_image", "actdiff_all_masked")
TARGETS = {"rrr_speedup": 4.0, "actdiff_speedup": 4.0, "rrr/erm": 2.5, "actdiff/erm": 1.9, "loader_img_s": 10_000}
# CXR-P's train split: 208 positives, every one with a segmentation, among 947 images. Negatives carry
# all-ones masks (no penalty; ActDiff makes no shuffled copy of them), so a training batch of 16 has
# about 3.5 masked images; the bench uses round(0.22 * batch) = 4.
POSITIVE_RATE = 208 / 947


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------- workers (one measurement per process)

def make_batch(batch: int, size: int, positive_rate: float):
    """A training-shaped batch: the first round(rate * batch) images are positives whose mask is a
    rectangle (the abnormality) over ~10% of the image; the rest are negatives with all-ones masks."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    positives = round(positive_rate * batch)
    y = (torch.arange(batch) < positives).long()
    m = torch.ones(batch, 1, size, size)
    side = max(1, round(size * 0.32))
    m[:positives] = 0
    m[:positives, :, size // 8: size // 8 + side, size // 6: size // 6 + side] = 1
    return x, y, m


def step_fns(methods, model, x, y, m, lam: float = 0.1) -> dict:
    """One loss closure per measured step. ``actdiff_all_masked``: ActDiff with every image masked, the
    worst case (a shuffled copy of each image, 2B images through the network)."""
    import torch

    from dgx.methods import build_method
    from dgx.methods.actdiff import masked_copies
    from dgx.methods.reference import actdiff_per_image, rrr_per_image

    def per_image_actdiff():
        rows, shuffled = masked_copies(x, m)
        x_masked = x.clone()
        x_masked[rows] = shuffled
        return actdiff_per_image(model, x, x_masked, y, lam)  # like the paper's code: two passes per image

    all_masked = m.clone()
    all_masked[y == 0] = 0
    all_masked[y == 0, :, : x.shape[2] // 2] = 1  # negatives get a half-image mask too
    fns = {}
    for method in methods:
        if method == "rrr_per_image":
            fns[method] = lambda: rrr_per_image(model, x, y, m, lam)  # noqa: E731
        elif method == "actdiff_per_image":
            fns[method] = per_image_actdiff
        elif method == "actdiff_all_masked":
            fns[method] = (lambda impl: lambda: impl.loss(model, x, y, all_masked))(build_method("actdiff", lam))
        else:
            fns[method] = (lambda impl: lambda: impl.loss(model, x, y, m))(build_method(method, lam))
    assert torch.equal(all_masked[y == 1], m[y == 1])
    return fns


def _setup(model_name: str, size: int, batch: int, threads: int, positive_rate: float):
    import torch

    from dgx.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name, "none").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    return model, opt, make_batch(batch, size, positive_rate)


def _timed_step(opt, fn) -> float:
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    fn()["loss"].backward()
    opt.step()
    return time.perf_counter() - start


def step_worker(method: str, model_name: str, size: int, batch: int, steps: int, warmup: int, threads: int,
                positive_rate: float) -> dict:
    model, opt, (x, y, m) = _setup(model_name, size, batch, threads, positive_rate)
    fn = step_fns([method], model, x, y, m)[method]
    times = sorted(t for i, t in enumerate(_timed_step(opt, fn) for _ in range(warmup + steps)) if i >= warmup)
    median = times[len(times) // 2]
    return {"method": method, "ms_per_step": 1000 * median, "img_s": batch / median, "peak_rss_mb": peak_rss_mb(),
            "steps": steps}


def interleaved_worker(methods: list[str], model_name: str, size: int, batch: int, rounds: int, warmup: int,
                       threads: int, positive_rate: float) -> dict:
    """Step times of several methods on one model, alternating step by step (round robin).

    Drift in machine speed hits every method alike, so ratios of the medians are
    what "side by side in one run" means on a noisy machine.
    """
    model, opt, (x, y, m) = _setup(model_name, size, batch, threads, positive_rate)
    fns = step_fns(methods, model, x, y, m)
    times: dict[str, list[float]] = {k: [] for k in methods}
    for r in range(warmup + rounds):
        for method, fn in fns.items():
            t = _timed_step(opt, fn)
            if r >= warmup:
                times[method].append(t)
    return {k: 1000 * sorted(v)[len(v) // 2] for k, v in times.items()}


def loader_worker(n: int, size: int, batch: int, threads: int) -> dict:
    """Cached uint8 memmap -> normalized float batches (what the training loop consumes)."""
    import numpy as np
    import torch

    from dgx.data.base import Split
    from dgx.data.loader import batches
    from dgx.models import InputNormalizer

    torch.set_num_threads(threads)
    normalize = InputNormalizer()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        arr = np.lib.format.open_memmap(path, "w+", np.uint8, (n, size, size))
        rng = np.random.default_rng(0)
        for start in range(0, n, 256):
            arr[start:start + 256] = rng.integers(0, 256, (min(256, n - start), size, size), dtype=np.uint8)
        arr.flush()
        del arr
        images = np.load(path, mmap_mode="r")
        split = Split(images, np.zeros(n, dtype=np.int64), {})
        rss_before = _anon_mb()
        start = time.perf_counter()
        seen = 0
        for x, _, _ in batches(split, batch, shuffle=True, seed=0):
            seen += len(normalize(x))
        elapsed = time.perf_counter() - start
        return {"images": n, "img_s": seen / elapsed, "rss_growth_mb": _anon_mb() - rss_before,
                "dataset_mb": n * size * size / 2**20, "peak_rss_mb": peak_rss_mb()}


def png_worker(n: int, size: int, threads: int) -> dict:
    """The alternative: decode and resize a PNG per sample (what a non-cached dataset does)."""
    import numpy as np
    import torch
    from PIL import Image

    from dgx.models import to_input

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(n):
            p = Path(tmp) / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (1024, 1024), dtype=np.uint8)).save(p)  # SIIM-sized source
            paths.append(p)
        start = time.perf_counter()
        for p in paths:
            with Image.open(p) as im:
                a = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BILINEAR))
            to_input(torch.from_numpy(a)[None, None])
        elapsed = time.perf_counter() - start
    return {"images": n, "img_s": n / elapsed, "peak_rss_mb": peak_rss_mb()}


def _anon_mb() -> float:
    """Anonymous resident memory (heap): what loading a dataset whole would grow. The file-backed
    pages of a memory map are reclaimable page cache and are not counted."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- driver

def run_sub(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--args", json.dumps(kw)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench worker {kind} {kw} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="dgx benchmarks (prints a table, writes JSON)")
    ap.add_argument("--short", action="store_true", help="CI smoke test: fewer steps and images, the same measurements "
                    "two processes at a time with one thread each (its timings do not compare with a full run's)")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--positive-rate", type=float, default=POSITIVE_RATE,
                    help="share of the batch that are masked positives (default: CXR-P's train split, 208/947)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/bench.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = {"step": step_worker, "loader": loader_worker, "png": png_worker,
              "interleaved": interleaved_worker}[args.worker]
        print(json.dumps(fn(**json.loads(args.args))))
        return

    steps, warmup = (3, 1) if args.short else (10, 2)
    n_small, n_large, n_png = (250, 1000, 40) if args.short else (2000, 8000, 300)
    if args.short:  # a smoke test: the measurement processes (torch's import is most of each) two at a time
        args.threads = 1
    started = time.perf_counter()
    results: dict = {"setting": {"model": args.model, "size": args.size, "batch": args.batch, "threads": args.threads,
                                 "short": args.short, "device": "cpu",
                                 "positives_per_batch": round(args.positive_rate * args.batch)}, "steps": {}, "loader": {}}
    print(f"dgx bench: {args.model}, {args.size} px, batch {args.batch} "
          f"({round(args.positive_rate * args.batch)} masked positives), {args.threads} CPU threads"
          f"{' (short)' if args.short else ''}", flush=True)
    # Two views of the same steps. "separate": each method in its own process (also its peak
    # memory); "interleaved": all methods on one model in one process, alternating step by step,
    # so machine drift hits all alike. They differ by more than noise (allocator and cache state
    # after a different method's step), so both are printed.
    calls = [("step", dict(method=method, model_name=args.model, size=args.size, batch=args.batch, steps=steps,
                           warmup=warmup, threads=args.threads, positive_rate=args.positive_rate))
             for method in STEP_METHODS]
    calls += [("interleaved", dict(methods=list(STEP_METHODS), model_name=args.model, size=args.size,
                                   batch=args.batch, rounds=steps, warmup=warmup, threads=args.threads,
                                   positive_rate=args.positive_rate)),
              ("loader", dict(n=n_small, size=224, batch=64, threads=args.threads)),
              ("loader", dict(n=n_large, size=224, batch=64, threads=args.threads)),
              ("png", dict(n=n_png, size=224, threads=args.threads))]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2 if args.short else 1) as pool:
        done = list(pool.map(lambda call: run_sub(call[0], **call[1]), calls))
    for method, step in zip(STEP_METHODS, done):
        results["steps"][method] = step
    inter, small, large, png = done[len(STEP_METHODS):]
    s = results["steps"]
    for method, value in inter.items():
        s[method]["ms_interleaved"] = value

    def ratio_pair(a: str, b: str) -> tuple[float, float]:
        return s[a]["ms_per_step"] / s[b]["ms_per_step"], s[a]["ms_interleaved"] / s[b]["ms_interleaved"]

    pairs = {"rrr/erm": ("rrr", "erm"), "actdiff/erm": ("actdiff", "erm"), "gradmask/erm": ("gradmask", "erm"),
             "actdiff_all_masked/erm": ("actdiff_all_masked", "erm"),
             "rrr_speedup": ("rrr_per_image", "rrr"), "actdiff_speedup": ("actdiff_per_image", "actdiff")}
    both = {name: ratio_pair(*ab) for name, ab in pairs.items()}
    ratios = {name: v[0] for name, v in both.items()}
    results["ratios_interleaved"] = {name: v[1] for name, v in both.items()}
    results["loader"] = {"cache_small": small, "cache_large": large, "png_per_sample": png}
    ratios["loader_img_s"] = large["img_s"]
    ratios["loader_vs_png"] = large["img_s"] / png["img_s"]
    results["ratios"] = ratios
    results["wall_s"] = time.perf_counter() - started

    print(f"\n{'step':<20}{'ms/step':>10}{'img/s':>10}{'peak MB':>10}{'ms interleaved':>16}")
    for method, r in s.items():
        print(f"{method:<20}{r['ms_per_step']:>10.1f}{r['img_s']:>10.1f}{r['peak_rss_mb']:>10.0f}"
              f"{r['ms_interleaved']:>16.1f}")
    print(f"\n{'loader (224 px)':<28}{'images':>8}{'img/s':>10}{'anon RSS +MB':>15}{'data MB':>9}")
    for name, r in (("cache, memmap", small), ("cache, memmap", large)):
        print(f"{name:<28}{r['images']:>8}{r['img_s']:>10.0f}{r['rss_growth_mb']:>15.1f}{r['dataset_mb']:>9.0f}")
    print(f"{'PNG decode per sample':<28}{png['images']:>8}{png['img_s']:>10.0f}")
    print(f"\n{'ratio':<24}{'separate':>10}{'interleaved':>13}{'target':>12}  verdict (separate / interleaved)")
    for name, value in ratios.items():
        inter_v = results["ratios_interleaved"].get(name)
        inter_s = f"{inter_v:>13.2f}" if inter_v is not None else f"{'':>13}"
        target = TARGETS.get(name)
        if target is None:
            print(f"{name:<24}{value:>10.2f}{inter_s}")
            continue
        lower_is_better = "/" in name

        def ok(v):
            return v <= target if lower_is_better else v >= target

        verdict = " / ".join("met" if ok(v) else "NOT met" for v in (value, inter_v) if v is not None)
        print(f"{name:<24}{value:>10.2f}{inter_s}{('<= ' if lower_is_better else '>= ') + f'{target:g}':>12}  {verdict}")
    print(f"\nwall {results['wall_s']:.0f} s; JSON: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
