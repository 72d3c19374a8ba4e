"""`--pack K` in sweeps and workers: grid points of one λ and seed train as one pack and each trial
records what training it alone records (tests/test_pack.py checks the numbers member by member)."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from dgx import runs
from dgx.config import get_settings
from dgx.errors import DgxError
from dgx.sweep import queue
from dgx.resolve import resolve_config
from dgx.spec import TrainRequest
from dgx.sweep.plan import SweepPlan
from dgx.sweep.study import check_pack, prepare_sweep, work
from tests.helpers import TINY_DATA, tiny_data
from tests.wandb_files import offline_runs

GRID = {"lr": [1e-3, 1e-4, 3e-4], "wd": [0.0, 1e-2]}  # ERM: 6 points, one pack of 4 and one of 2


def _plan(tmp_path, name: str, pack: int, url: str) -> SweepPlan:
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    budget = tmp_path / "budget.yaml"
    budget.write_text(yaml.safe_dump({"description": "test", "grid": str(tmp_path / "grid.yaml"), "seeds": 1,
                                      "train": {"model": "resnet18-w16", "weights": "none", "image_size": 24,
                                                "epochs": 1}}))
    opts = [f"{k}={v}" for k, v in {**TINY_DATA, "n_train": "48", "n_val": "32", "n_test": "32",
                                    "n_target": "16"}.items()]
    cfg, plan_budget = resolve_config(TrainRequest(method="erm", mask=None, data="decoy-cxr", data_opts=tuple(opts or ()), budget=str(budget)))
    return SweepPlan(base=cfg, budget=plan_budget, study=name, storage=url, seeds=1, device="cpu", pack=pack)


def _run(tmp_path, name: str, pack: int, monkeypatch) -> optuna.Study:
    monkeypatch.setenv("DGX_RUNS_DIR", str(tmp_path / f"runs-{name}"))
    get_settings.cache_clear()
    url = f"sqlite:///{tmp_path / name}.db"
    plan = _plan(tmp_path, name, pack, url)
    search = prepare_sweep(plan)
    work(plan, search, tiny_data(tmp_path, plan.base), get_settings(), progress=False)
    return search


def test_a_packed_sweep_records_what_the_unpacked_one_does(tmp_path, monkeypatch):
    packed = _run(tmp_path, "packed", 4, monkeypatch)
    alone = _run(tmp_path, "alone", 1, monkeypatch)
    done_p = {queue.point_key(t.params): t for t in packed.get_trials(states=(TrialState.COMPLETE,))}
    done_a = {queue.point_key(t.params): t for t in alone.get_trials(states=(TrialState.COMPLETE,))}
    assert len(done_p) == len(done_a) == 6
    assert sorted(t.user_attrs.get("pack") for t in done_p.values()) == [2, 2, 4, 4, 4, 4]
    assert {t.user_attrs.get("pack") for t in done_a.values()} == {None}
    for key, t in done_a.items():
        p = done_p[key]
        assert p.user_attrs["run_id"] == t.user_attrs["run_id"]  # the same run folders, named by config
        assert p.value == pytest.approx(t.value, abs=0.01)  # float32 rounding: a swapped pair or two of 32 images
        assert p.intermediate_values.keys() == t.intermediate_values.keys()
    # each packed member's folder is a finished, verifiable run
    for t in done_p.values():
        folder = runs.run_dir(tmp_path / "runs-packed", t.user_attrs["run_id"])
        assert runs.verify(folder)[1] == []
    # W&B offline (the default users run): one run per member, each with its own metrics. Before runs were
    # opened with reinit="create_new", a member's init finished the previous member's run and its next log
    # raised "Run ... is finished", failing the pack.
    logged = {r.name: r for r in offline_runs(tmp_path / "runs-packed")}
    assert sorted(logged) == sorted(f"packed#{t.number}" for t in done_p.values())
    for t in done_p.values():
        run = logged[f"packed#{t.number}"]
        epochs = [row for row in run.history if "val/auroc" in row]
        assert [row["val/auroc"] for row in epochs] == [t.intermediate_values[1]]  # this member's own score
        assert epochs[0]["train/lr"] == t.params["lr"]  # the rate epoch 1 trained at, not the stepped schedule's 0
        assert run.summary["val/auroc"] == pytest.approx(t.value)
        assert run.config["lr"] == t.params["lr"] and run.config["trial"] == t.number
        assert run.group == "packed" and run.job_type == "search"


def test_claim_like_takes_only_points_of_the_same_pack_key(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'q.db'}", study_name="q")
    points = [{"lr": lr, "wd": 0.0, "lam": lam} for lam in (0.1, 0.3) for lr in (1e-3, 1e-4, 1e-5)]
    queue.enqueue_missing(study, points)
    first = queue.claim(study)
    key = lambda p: queue.point_key({k: v for k, v in p.items() if k not in ("lr", "wd")})  # noqa: E731
    more = queue.claim_like(study, first, 5, key)
    assert len(more) == 2  # the two other points with λ = 0.1; the λ = 0.3 ones stay waiting
    params = [study._storage.get_trial(queue.trial_id(t)).system_attrs["fixed_params"] for t in [first, *more]]
    assert {p["lam"] for p in params} == {0.1}
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 3


def test_pack_flags_that_cannot_work_fail_before_training(tmp_path):
    plan = _plan(tmp_path, "x", 4, "sqlite://")
    check_pack(plan)
    with pytest.raises(DgxError, match="--sampler grid"):
        check_pack(replace(plan, sampler="tpe"))
    with pytest.raises(DgxError, match="per-sample batch norm"):
        check_pack(replace(plan, base=replace(plan.base, profile="official")))
    with pytest.raises(DgxError, match="ResNets"):
        check_pack(replace(plan, base=replace(plan.base, model="mobilenet_v3_small")))
    with pytest.raises(DgxError, match=">= 1"):
        check_pack(replace(plan, pack=0))
