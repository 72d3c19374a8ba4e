"""The ``official`` profile's batched per-sample-BN step against the released per-image loop.

    python bench/official_step.py            # resnet50, 64 px, batch 16, CPU (the issue's setting)
    python bench/official_step.py --short    # CI: resnet18-w16, fewer rounds

For RRR, GradMask and ActDiff it times one training step (loss, backward, Adam)
both ways on the same model and batch, round robin so machine drift hits both
alike: dgx's batched step (``--profile official``: a batched CE pass plus one
pass with per-sample batch-norm statistics, dgx/methods/per_sample.py) and
``dgx.methods.reference.released_step_loss`` (the released ``train_epoch``: a
pass per image). It also prints how far apart their losses are (in float64). Target: the
batched step >= 4x faster.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import POSITIVE_RATE, make_batch  # noqa: E402  (bench/run.py: the training-shaped batch)

KINDS = ("rrr", "gradmask", "actdiff")
TARGET = 4.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "official_step.json")
    args = ap.parse_args()
    model_name = args.model or ("resnet18-w16" if args.short else "resnet50")
    rounds = args.rounds or (2 if args.short else 3)

    import torch

    from dgx.methods import build_method
    from dgx.methods.actdiff import shuffle_released
    from dgx.methods.reference import released_step_loss
    from dgx.models import build_model
    from dgx.profiles import PROFILES

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(model_name, "none").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y, m = make_batch(args.batch, args.size, POSITIVE_RATE)
    x_masked = shuffle_released(x, m, seed=0)
    lam = 0.1

    def timed(fn) -> tuple[float, float]:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        opt.step()
        return time.perf_counter() - start, float(loss.detach())

    rows = {}
    for kind in KINDS:
        method = build_method(kind, lam, profile=PROFILES["official"], shuffle_seed=0)
        fns = {"batched": lambda: method.loss(model, x, y, m)["loss"],
               "per_image": lambda: released_step_loss(kind, model, x, y, m, lam, x_masked)}
        times = {k: [] for k in fns}
        # Both losses from the same weights and statistics, in float64: batch-of-1 statistics over the 2x2
        # maps of the last stage make a random-init ResNet-50's input gradients ill-conditioned in float32
        # (5-14% per image, either way of computing them), which would hide what this compares.
        import copy

        model64 = copy.deepcopy(model).double()
        x64, m64 = x.double(), m.double()
        losses = {"batched": float(method.loss(copy.deepcopy(model64), x64, y, m64)["loss"].detach()),
                  "per_image": float(released_step_loss(kind, copy.deepcopy(model64), x64, y, m64, lam,
                                                        x_masked.double()).detach())}
        for r in range(rounds + 1):  # round 0 warms up
            for k, fn in fns.items():
                t, _ = timed(fn)
                if r:
                    times[k].append(t)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows[kind] = {"batched_ms": 1000 * med["batched"], "per_image_ms": 1000 * med["per_image"],
                      "speedup": med["per_image"] / med["batched"],
                      "loss_rel_diff": abs(losses["batched"] - losses["per_image"]) / abs(losses["per_image"])}
        print(f"{kind:9s} batched {rows[kind]['batched_ms']:8.0f} ms  per-image {rows[kind]['per_image_ms']:8.0f} ms  "
              f"speedup {rows[kind]['speedup']:5.2f}x (target >= {TARGET:g}x)  "
              f"loss rel. diff {rows[kind]['loss_rel_diff']:.1e}", flush=True)
    setting = {"model": model_name, "size": args.size, "batch": args.batch, "threads": args.threads,
               "rounds": rounds, "positives_per_batch": int(y.sum())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"setting": setting, "steps": rows}, indent=1))
    print(f"setting {setting}; JSON {args.json}")


if __name__ == "__main__":
    main()
