"""decoy-mnist, the literature's known answer (Ross et al. 2017), replicated over draws 1000-1002: ERM fooled
by the swatch on every replicate (random-shade accuracy at most 65%), the oracle not (at least 90%), the swapped
rule picks RRR's λ from the grid without test data, and RRR at it beats ERM by more than 10 AUROC points on
every replicate and recovers at least half of the oracle's headroom on average. The trainings run as in
tests/test_decoy_effect.py (two processes, one torch thread each)."""

from __future__ import annotations

import numpy as np
import pytest

from dgx.selection import pick
from tests.test_decoy_effect import REPLICATES, replicate_jobs, train_all


@pytest.mark.slow
def test_decoy_mnist_known_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("DGX_THREADS", "1")
    r = train_all(replicate_jobs("decoy-mnist", "mnist", "abnormality", 0.057, 0.3), tmp_path)
    assert pick([r["pick0.057"]["candidate"], r["rrr0"]["candidate"]], "swapped") == 1  # λ0 keeps part of the swatch
    erm_acc = np.array([r[f"erm{s}"]["accuracy"] for s in REPLICATES])
    oracle_acc = np.array([r[f"oracle{s}"]["accuracy"] for s in REPLICATES])
    rrr, erm = (np.array([r[f"{m}{s}"]["target"] for s in REPLICATES]) for m in ("rrr", "erm"))
    oracle = np.array([r[f"oracle{s}"]["target"] for s in REPLICATES])
    print(f"decoy-mnist draws 1000-1002: ERM accuracy {np.round(erm_acc, 3)}, oracle {np.round(oracle_acc, 3)}; "
          f"AUROC ERM {np.round(erm, 3)}, RRR {np.round(rrr, 3)}, oracle {np.round(oracle, 3)}")
    assert erm_acc.max() <= 0.65  # ERM is fooled by the swatch on every replicate
    assert oracle_acc.min() >= 0.90  # a model that never saw the shortcut is not
    assert (rrr - erm).min() > 0.10  # RRR beats ERM on every replicate ...
    assert np.mean((rrr - erm) / (oracle - erm)) >= 0.5  # ... and recovers most of the headroom
