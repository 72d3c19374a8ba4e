"""How much of a model's saliency lies on the lesion, by image size, model, epochs and data size.

The hypothesis (issue 23, point 5): at 48 px no model puts more than ~2% of its input-gradient saliency on the
pneumothorax because the lesion is a few pixels there, not because the model ignores it. For each setting the
**oracle** (ERM on decoy-cxr's source with the decoy decorrelated: the model that learns the lesion; no method
result is involved) is trained on the first calibration draw (sweeps/protocol.yaml), and its saliency
|∂(z₁ − z₀)/∂x| on the source test split's positives is split into the lesion (the abnormality mask) and the rest.
Printed per setting: the lesion's share of saliency, its share of the area, their ratio (the concentration: 1 =
no preference), the oracle's target AUROC, and the training's wall time (one thread).

    python bench/saliency.py [--draw 100]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# (label, image size, model, n_train, epochs): the default, the old default, and the same budget spent otherwise.
SETTINGS = (
    ("default: 48 px, w16, 1,536 x 2 ep", 48, "resnet18-w16", 1536, 2),
    ("old default: 48 px, w16, 384 x 8 ep", 48, "resnet18-w16", 384, 8),
    ("96 px, w16, 384 x 2 ep", 96, "resnet18-w16", 384, 2),
    ("48 px, w32, 768 x 2 ep", 48, "resnet18-w32", 768, 2),
    ("48 px, w16, 1,536 x 8 ep (4x the time)", 48, "resnet18-w16", 1536, 8),
    ("96 px, w16, 1,536 x 2 ep (4x the time)", 96, "resnet18-w16", 1536, 2),
)


def measure(label: str, size: int, model: str, n_train: int, epochs: int, draw: int, runs: Path) -> dict:
    import torch

    from dgx.analyze.attribution import saliency
    from dgx.data import oracle_options
    from dgx.models import build_model
    from dgx.runs import BEST
    from dgx.resolve import load_data, resolve_config
    from dgx.spec import TrainRequest
    from dgx.train import train

    cfg, _ = resolve_config(TrainRequest(method="erm", mask=None, data="decoy-cxr", data_opts=tuple([f"seed={draw}", f"n_train={n_train}"] or ()), budget="quick", model=model, image_size=size, epochs=epochs))
    cfg = replace(cfg, data_options=oracle_options(cfg.dataset, cfg.data_options))
    data = load_data(cfg)
    folder = runs / cfg.run_id(data.fingerprint)
    started = time.perf_counter()
    result = train(cfg, data, folder, progress=False)
    wall = time.perf_counter() - started
    net = build_model(cfg.model, "none")
    net.load_state_dict(torch.load(folder / BEST, map_location="cpu", weights_only=True))
    test = data.test
    pos = np.flatnonzero(test.labels == 1)
    lesion = np.asarray(test.masks["abnormality"][pos]) > 0
    sal = saliency(net, np.asarray(test.images[pos]))
    share, area = float(sal[lesion].sum() / sal.sum()), float(lesion.mean())
    target = float(np.mean([result.auroc[t] for t in data.targets]))
    return {"setting": label, "lesion_share": share, "lesion_area": area, "concentration": share / area,
            "oracle_target": target, "wall_s": wall, "lesion_px": float(lesion.sum(axis=(1, 2)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draw", type=int, default=100)
    args = ap.parse_args()
    os.environ.setdefault("DGX_DATA_DIR", str(ROOT / "bench" / "results" / "replicates" / "data"))
    os.environ.setdefault("DGX_THREADS", "1")
    runs = ROOT / "bench" / "results" / "saliency" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    print(f"oracle on decoy-cxr draw {args.draw}; saliency on the source test split's positives")
    print("| setting | lesion px / image | lesion share of saliency % | of area % | concentration | oracle target AUROC | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for setting in SETTINGS:
        r = measure(*setting, draw=args.draw, runs=runs)
        print(f"| {r['setting']} | {r['lesion_px']:.0f} | {100 * r['lesion_share']:.1f} | {100 * r['lesion_area']:.1f} | "
              f"{r['concentration']:.1f}x | {100 * r['oracle_target']:.1f} | {r['wall_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
