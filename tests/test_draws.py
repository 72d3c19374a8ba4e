"""On generated data a replicate is a data draw and an initialization (dgx.data.GENERATED).

A sweep's seed k trains on draw root + k: the seeds phase spans distinct draws, each recorded on its trial,
so the tables' CIs and paired tests are over draws; real data keeps one draw for every seed.
"""

from __future__ import annotations

import numpy as np
import optuna

from dgx.data import Draws, draw_options, load_dataset, root_draw
from dgx.data.decoy import DecoyConfig, fingerprint

TINY = {"n_train": "32", "n_val": "16", "n_test": "16", "n_target": "16"}


def test_seed_k_loads_draw_root_plus_k(tmp_path):
    assert root_draw("decoy-cxr", {}) == DecoyConfig().seed == 1000  # the protocol's first evaluation draw
    assert root_draw("decoy-cxr", {"seed": "7"}) == 7 and root_draw("cxr-p", {}) is None
    assert draw_options("decoy-cxr", {"seed": "7"}, 2) == {"seed": "9"}
    assert draw_options("cxr-p", {"cache_dir": "x"}, 2) == {"cache_dir": "x"}  # real data: one draw
    draws = Draws("decoy-cxr", {**TINY, "seed": "7"}, 32, tmp_path)
    zero, two = draws(0), draws(2)
    assert two.fingerprint == fingerprint(DecoyConfig(seed=9, image_size=32, **{k: int(v) for k, v in TINY.items()}))
    assert zero.fingerprint != two.fingerprint and not np.array_equal(zero.train.images, two.train.images)
    assert draws(2) is two  # loaded once
    assert np.array_equal(load_dataset("decoy-cxr", {**TINY, "seed": "7"}, 32, tmp_path, seed=2).train.images,
                          two.train.images)


def test_the_oracle_of_a_draw_shares_its_targets(tmp_path):
    base = load_dataset("decoy-cxr", TINY, 32, tmp_path, seed=1)
    oracle = load_dataset("decoy-cxr", {**TINY, "decoy_strength": "0.5"}, 32, tmp_path, seed=1)
    for name, split in base.targets.items():
        assert np.array_equal(split.images, oracle.targets[name].images)
    assert not np.array_equal(base.train.images, oracle.train.images)


def test_a_sweeps_seeds_phase_spans_draws_and_records_them(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dgx.cli import app

    monkeypatch.chdir(tmp_path)
    args = ["sweep", "erm", "--model", "resnet18-w16", "--weights", "none", "--image-size", "32", "--epochs", "1",
            "--seeds", "3", "--no-oracle", "--study", "draws", *sum((["--data-opt", f"{k}={v}"] for k, v in TINY.items()), []),
            "--data-opt", "seed=40"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="draws.seeds", storage="sqlite:///runs/dgx.db")
    trials = sorted(study.get_trials(), key=lambda t: t.user_attrs["seed"])
    assert [t.user_attrs["draw"] for t in trials] == [40, 41, 42]
    assert len({t.user_attrs["run_id"] for t in trials}) == 3
    assert "3 paired replicates" in result.output or "replicates" in result.output
