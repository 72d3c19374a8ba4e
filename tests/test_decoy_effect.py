"""The benchmark's point, end to end, on the default configuration of the main job.

decoy-cxr's source is fully confounded (the decoy token marks every positive and
no negative) and its targets are not. ERM learns the token: near-perfect on the
source, close to chance out of distribution. RRR with lung-periphery masks, at
the quick budget's own settings (resnet18-w16 from scratch, 48 px, 8 epochs,
the first λ of its grid), must beat it on the target average, over 3 seeds.
This is the slowest test: it trains 6 real models (~2-4 min on 2 CPU cores).
"""

from __future__ import annotations

import numpy as np
import pytest

from dgx.data import load_dataset
from dgx.sweep.plan import resolve_config
from dgx.train import train

SEEDS = (0, 1, 2)


def target_mean(result, data) -> float:
    return float(np.mean([result.auroc[name] for name in data.targets]))


def default_config(method: str, mask: str | None, seed: int):
    cfg, _ = resolve_config(method, mask, "decoy-cxr", None, "quick", model=None, weights=None, image_size=None,
                            epochs=None, batch_size=16, actdiff_layers="all", seed=seed)
    return cfg


@pytest.mark.slow
def test_rrr_with_periphery_masks_beats_erm_out_of_distribution(tmp_path):
    erm_cfg = default_config("erm", None, 0)
    data = load_dataset("decoy-cxr", {}, erm_cfg.image_size, tmp_path / "data")
    erm, rrr, erm_source = [], [], []
    for seed in SEEDS:
        e = train(default_config("erm", None, seed), data, tmp_path / f"erm{seed}", progress=False)
        r = train(default_config("rrr", "periphery", seed), data, tmp_path / f"rrr{seed}", progress=False)
        erm.append(target_mean(e, data))
        rrr.append(target_mean(r, data))
        erm_source.append(e.auroc[data.source])
    margin = float(np.mean(rrr) - np.mean(erm))
    print(f"decoy effect: ERM targets {np.round(erm, 3)} (source {np.round(erm_source, 3)}), "
          f"RRR (periphery) targets {np.round(rrr, 3)}, margin {100 * margin:+.1f} points")
    assert min(erm_source) > 0.85  # the shortcut story: ERM is good in distribution ...
    assert np.mean(erm) < 0.65  # ... and poor out of it
    assert margin > 0.05, (erm, rrr)  # RRR (periphery) recovers more than 5 AUROC points on average
