"""λ₀ per method: the λ at which a method's penalty equals the cross-entropy at initialization.

The rule behind every λ grid of dgx's CPU budgets (and Ross et al.'s rule of thumb for RRR): it sizes λ so
the two terms start comparable, from the untrained model alone, without looking at any result. For each
random initialization (``--inits``), one training batch of the dataset's calibration draw (the protocol's
first, sweeps/protocol.yaml) goes through the method in train mode; λ₀ = CE / penalty. Prints the median
and the range over inits.

    python bench/lam0.py [--dataset decoy-cxr] [--budget quick] [--mask periphery] [--inits 5]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def lam0(dataset: str, budget: str, mask: str, method: str, inits: int, draw: int, batch: int = 16) -> list[float]:
    from dgx.data.loader import batches
    from dgx.methods import build_method
    from dgx.models import InputNormalizer, build_model
    from dgx.resolve import load_data, resolve_config
    from dgx.spec import TrainRequest

    cfg, _ = resolve_config(TrainRequest(method=method, mask=mask, data=dataset, data_opts=tuple([f"seed={draw}"] or ()), budget=budget, batch_size=batch))
    data = load_data(cfg)
    images, labels, masks = next(batches(data.train, batch, mask, shuffle=True, seed=0))
    x = InputNormalizer("imagenet")(images)
    out = []
    for init in range(inits):
        torch.manual_seed(init)
        model = build_model(cfg.model, "none").train()
        parts = build_method(method, lam=1.0).loss(model, x, labels, masks.float())
        out.append(parts["ce"].item() / max(parts["penalty"].item(), 1e-30))
    return out


def main() -> None:
    import os

    import yaml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="decoy-cxr")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--mask", default="abnormality")
    ap.add_argument("--methods", default="rrr,actdiff,gradmask")
    ap.add_argument("--inits", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("DGX_DATA_DIR", str(ROOT / "bench" / "results" / "replicates" / "data"))
    draw = yaml.safe_load((ROOT / "sweeps" / "protocol.yaml").read_text())[args.dataset]["calibration"][0]
    print(f"λ₀ = CE / penalty at init, {args.dataset} draw {draw}, budget {args.budget}, mask {args.mask}, "
          f"{args.inits} inits, one batch of 16")
    for method in args.methods.split(","):
        values = lam0(args.dataset, args.budget, args.mask, method, args.inits, draw)
        print(f"  {method:9s} median {statistics.median(values):.3g}  range {min(values):.3g}–{max(values):.3g}")


if __name__ == "__main__":
    main()
