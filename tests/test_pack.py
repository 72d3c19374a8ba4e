"""Packed trials (dgx/pack.py, dgx.train.train_runs): K trainings as one wide network.

Each member's numbers must equal that member trained alone: one step checked to float64 precision
(losses, every parameter gradient, the running statistics), the Adam arithmetic against torch's own,
and whole trainings (histories, selections, test AUROCs, stored scores) within float tolerance.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dgx import runs
from dgx.errors import DgxError
from dgx.methods import build_method
from dgx.models import build_model
from dgx.pack import PackedAdam, check_packable, member_state, pack_models, slice_member
from dgx.profiles import get_profile
from dgx.train import train, train_runs
from tests.helpers import tiny_config, tiny_data

METHODS = [("erm", 0.0), ("rrr", 0.3), ("gradmask", 1e-3), ("actdiff", 1e-2)]


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _members(k: int = 3) -> list[torch.nn.Module]:
    torch.manual_seed(0)
    models = [build_model("resnet18-w16", "none") for _ in range(k)]
    with torch.no_grad():  # distinct members, as after some epochs at different rates
        for i, m in enumerate(models):
            for p in m.parameters():
                p.add_(0.05 * i * torch.randn_like(p))
    return models


@pytest.mark.parametrize("method,lam", METHODS)
def test_one_packed_step_equals_each_member_alone(float64, method, lam):
    models = _members()
    x = torch.randn(8, 3, 32, 32)
    y = torch.tensor([0, 1] * 4)
    m = (torch.rand(8, 1, 32, 32) > 0.4).double()
    m[:3] = 1.0  # unannotated rows: all-ones masks, as the loaders give them
    packed = pack_models(models)
    assert packed.pack_size == 3
    objective = build_method(method, lam)
    torch.manual_seed(1)  # ActDiff's shuffles: the same draws packed and alone
    parts = objective.loss(packed, x, y, m)
    assert parts["loss"].shape == (3,)
    parts["loss"].sum().backward()
    wide = dict(packed.named_parameters())
    for k, model in enumerate(models):
        torch.manual_seed(1)
        alone = objective.loss(model, x, y, m)
        alone["loss"].backward()
        for name in alone:
            assert float(parts[name][k].detach()) == pytest.approx(float(alone[name].detach()), rel=1e-6, abs=1e-9), (k, name)
        for name, p in model.named_parameters():
            got = slice_member(wide[name].grad, k, p.shape)
            torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-6 * float(p.grad.abs().max()) + 1e-12,
                                       msg=f"member {k} gradient of {name}")
        for name, t in member_state(packed, k, model).items():  # running statistics after the step
            torch.testing.assert_close(t, model.state_dict()[name], rtol=1e-7, atol=1e-12, msg=name)


def test_packed_input_gradients_are_each_members_own(float64):
    models = _members(2)
    packed = pack_models(models)
    x = torch.randn(4, 3, 32, 32)
    leaf = x.expand(2, *x.shape).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.log_softmax(packed.eval()(leaf), 1).sum(), leaf)
    for k, model in enumerate(models):
        xk = x.clone().requires_grad_(True)
        (alone,) = torch.autograd.grad(torch.log_softmax(model.eval()(xk), 1).sum(), xk)
        torch.testing.assert_close(grad[k], alone, rtol=1e-7, atol=1e-12)


def test_packed_adam_equals_torch_adam_per_member(float64):
    torch.manual_seed(0)
    k, shapes = 3, [(6, 2, 3, 3), (6,), (3, 4, 5)]  # blocks along dim 0, and a stacked (K, out, in) head
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    lrs, wds = [1e-3, 3e-4, 1e-2], [0.0, 1e-2, 1.0]
    opt = PackedAdam(params, k)
    opt.lr, opt.wd = torch.tensor(lrs), torch.tensor(wds)
    alone = [[torch.nn.Parameter(slice_member(p.detach(), i, _member_shape(p, k)).clone()) for p in params]
             for i in range(k)]
    torch_opts = [torch.optim.Adam(ps, lr=lr, weight_decay=wd) for ps, lr, wd in zip(alone, lrs, wds)]
    for _ in range(5):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, (ps, o) in enumerate(zip(alone, torch_opts)):
            for p, g, w in zip(ps, grads, params):
                p.grad = slice_member(g, i, p.shape).clone()
            o.step()
    for i, (ps, o) in enumerate(zip(alone, torch_opts)):
        for p, w in zip(ps, params):
            torch.testing.assert_close(slice_member(w.detach(), i, p.shape), p.detach(), rtol=1e-12, atol=1e-14)
        # the member's state in torch's own format loads into a torch Adam and equals it
        mine = opt.member_state(i, o)
        ref = o.state_dict()
        assert mine["param_groups"] == ref["param_groups"]
        for j in ref["state"]:
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(mine["state"][j][key], ref["state"][j][key], rtol=1e-12, atol=1e-14)
            assert float(mine["state"][j]["step"]) == float(ref["state"][j]["step"]) == 5.0


def _member_shape(p: torch.Tensor, k: int) -> tuple:
    return tuple(p.shape[1:]) if p.dim() == 3 else (p.shape[0] // k, *p.shape[1:])


def test_building_a_pack_leaves_the_rng_alone():
    models = _members(2)
    state = torch.get_rng_state()
    pack_models(models)
    assert torch.equal(state, torch.get_rng_state())  # ActDiff's shuffles come next: they must match alone


# Whole trainings. lr <= 1e-3: at 3e-3 these tiny from-scratch nets are chaotic, and a float32 ulp of
# difference (bias + 1e-7) grows to 2e-3 in loss within two epochs, packed or not.
GRID = [(1e-3, 0.0), (1e-4, 1e-2), (1e-3, 1e-3)]
# Draw 0 (not the default root draw): the tolerances below were measured on it. The cross-entropy is taken in
# float32 even in a float64 training (Method.ce), so trainings drift apart at ~1e-7 per step; on draw 1000 the
# ERM member's packed and alone test scores ended up to 2.7e-4 apart after 8 steps (measured 2026-12-05).
SMALL = tuple(sorted({"n_train": "64", "n_val": "48", "n_test": "48", "n_target": "32", "seed": "0"}.items()))


def _configs(method: str, lam: float, epochs: int = 2):
    base = tiny_config(method=method, mask="none" if method == "erm" else "periphery", lam=lam,
                       model="resnet18-w16", epochs=epochs, data_options=SMALL, image_size=24)
    return [replace(base, lr=lr, wd=wd) for lr, wd in GRID]


def _assert_same(alone, packed, dirs_a, dirs_p):
    for a, p, da, dp in zip(alone, packed, dirs_a, dirs_p, strict=True):
        assert p.best_epoch == a.best_epoch
        for ha, hp in zip(a.history, p.history, strict=True):
            assert hp["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-5)
            assert hp["val_auroc"] == pytest.approx(ha["val_auroc"], abs=1e-6)
            assert hp["lr"] == pytest.approx(ha["lr"], rel=1e-12)
        sa, sp = runs.load_scores(Path(da) / runs.SCORES), runs.load_scores(Path(dp) / runs.SCORES)
        for name in sa:
            np.testing.assert_allclose(sp[name][1], sa[name][1], rtol=1e-4, atol=1e-6)
            # AUROC is a step function of the scores: two scores 1e-5 apart may swap ranks, one pair's worth
            pairs = int(sa[name][0].sum()) * int((1 - sa[name][0]).sum())
            assert p.auroc[name] == pytest.approx(a.auroc[name], abs=1.01 / pairs)
        wa = torch.load(Path(da) / runs.BEST, weights_only=True)
        wp = torch.load(Path(dp) / runs.BEST, weights_only=True)
        for key in wa:
            torch.testing.assert_close(wp[key].double(), wa[key].double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method,lam", METHODS)
def test_packed_training_equals_each_trial_trained_alone(tmp_path, float64, method, lam):
    cfgs = _configs(method, lam)
    data = tiny_data(tmp_path, cfgs[0])
    dirs_a = [tmp_path / "alone" / str(i) for i in range(len(cfgs))]
    dirs_p = [tmp_path / "packed" / str(i) for i in range(len(cfgs))]
    alone = [train(c, data, d, device="cpu", progress=False) for c, d in zip(cfgs, dirs_a)]
    packed = train_runs(cfgs, data, dirs_p, device="cpu", progress=False)
    _assert_same(alone, packed, dirs_a, dirs_p)


def test_a_stopped_member_leaves_the_pack_and_the_rest_finish_as_alone(tmp_path, float64):
    cfgs = _configs("rrr", 0.3)
    data = tiny_data(tmp_path, cfgs[0])
    seen = []

    def on_epoch(i, epoch, stats):
        seen.append((i, epoch))
        if i == 1 and epoch == 1:
            raise RuntimeError("pruned")  # as a pruner stops a trial

    dirs_p = [tmp_path / "packed" / str(i) for i in range(3)]
    out = train_runs(cfgs, data, dirs_p, device="cpu", progress=False, on_epoch=on_epoch)
    assert isinstance(out[1], RuntimeError) and not (dirs_p[1] / runs.RESULT).exists()
    assert sorted(seen) == [(0, 1), (0, 2), (1, 1), (2, 1), (2, 2)]
    dirs_a = [tmp_path / "alone" / str(i) for i in (0, 2)]
    alone = [train(cfgs[i], data, d, device="cpu", progress=False) for i, d in zip((0, 2), dirs_a)]
    _assert_same(alone, [out[0], out[2]], dirs_a, [dirs_p[0], dirs_p[2]])


def test_an_interrupted_pack_resumes_packed_or_alone(tmp_path, float64):
    cfgs = _configs("actdiff", 1e-2)
    data = tiny_data(tmp_path, cfgs[0])
    dirs_a = [tmp_path / "alone" / str(i) for i in range(3)]
    alone = [train(c, data, d, device="cpu", progress=False) for c, d in zip(cfgs, dirs_a)]

    def stop(i, epoch, stats):
        if epoch == 1 and i == 2:
            raise KeyboardInterrupt  # Ctrl-C: not a member's failure, the whole pack stops

    dirs_p = [tmp_path / "packed" / str(i) for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        train_runs(cfgs, data, dirs_p, device="cpu", progress=False, on_epoch=stop)
    assert all((d / runs.LAST).exists() and not (d / runs.RESULT).exists() for d in dirs_p)
    resumed_alone = train(cfgs[0], data, dirs_p[0], device="cpu", progress=False)  # a packed folder resumes alone
    assert resumed_alone.resumed_from == 1
    rest = train_runs(cfgs, data, dirs_p, device="cpu", progress=False)  # and the others packed
    assert rest[0].val_auroc == resumed_alone.val_auroc  # finished: read back, not retrained
    assert [r.resumed_from for r in rest[1:]] == [1, 1]
    _assert_same(alone, rest, dirs_a, dirs_p)


def test_what_cannot_be_packed_is_refused_in_one_line():
    paper = get_profile("paper")
    a, b = tiny_config(method="rrr", lam=0.1), tiny_config(method="rrr", lam=0.3)
    with pytest.raises(DgxError, match="differ only in lr and wd"):
        check_packable([a, b], paper)
    with pytest.raises(DgxError, match="per-sample batch norm"):
        check_packable([a, replace(a, lr=1e-4)], get_profile("official"))
    check_packable([a, replace(a, lr=1e-4, wd=1e-2)], paper)  # lr and wd may differ
    with pytest.raises(DgxError, match="ResNets"):
        pack_models([build_model("mobilenet_v3_small", "none")])
    with pytest.raises(DgxError, match="one architecture"):
        pack_models([build_model("resnet18-w16", "none"), build_model("resnet18-w32", "none")])


def test_packed_scores_are_each_members(float64):
    models = _members(2)
    packed = copy.deepcopy(pack_models(models)).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        wide = torch.softmax(packed(x), 1)[:, 1]
        for k, m in enumerate(models):
            torch.testing.assert_close(wide[:, k], torch.softmax(m.eval()(x), 1)[:, 1], rtol=1e-10, atol=1e-12)
