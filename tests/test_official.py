"""The ``official`` profile against the released code's semantics, written here as per-image loops.

Each reference loop follows the released ``train.py:train_epoch``: a batched
train-mode pass for the cross-entropy, then every image alone through the
train-mode network for its penalty (ActDiff: the image, then its shuffled copy),
each pass updating the batch-norm running statistics. dgx's batched
per-sample-statistics step must give the same loss, the same gradient for every
parameter and the same running statistics.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dgx.errors import DgxError
from dgx.methods import build_method
from dgx.methods.actdiff import activation_layers, released_layers, shuffle_released
from dgx.methods.per_sample import per_sample_bn
from dgx.models import narrow_resnet
from dgx.profiles import PROFILES

OFFICIAL = PROFILES["official"]
LAM = 0.3


def model_for(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = narrow_resnet(16) if name == "resnet18-w16" else torchvision.models.get_model(name, num_classes=2)
    for mod in model.modules():  # non-trivial affine parameters and running statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return model.double().train()  # float64: GradMask's |∂| flips sign on float32 noise near zero


def batch(n: int = 4, size: int = 64, seed: int = 1, constrained: tuple[int, ...] = (1, 3)):
    """Rows in ``constrained`` get a small allowed region (background to penalize); the rest all-ones masks."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1] * (n // 2))
    m = torch.ones(n, 1, size, size, dtype=torch.float64)
    for k, row in enumerate(constrained):
        m[row] = 0
        m[row, :, 10 + 5 * k : 40 + 5 * k, 8 + 3 * k : 30 + 3 * k] = 1
    return x, y, m


def released_input_grad_penalty(model, xi, mi, kind):
    xi = xi.detach().requires_grad_(True)
    out = model(xi)
    if kind == "rrr":
        (g,) = torch.autograd.grad(torch.log(F.softmax(out, dim=1) + 1e-11).sum(), xi, create_graph=True)
        return ((1 - mi) * g).pow(2).sum()
    (g,) = torch.autograd.grad((out[:, 1] - out[:, 0]).abs().sum(), xi, create_graph=True)
    return ((1 - mi) * g).abs().sum()


def released_activations(model, image):
    """models/extract_activations.py: hook bn* (downsample.1 replacing the one before), store the outputs."""
    acts, hooks = [], []
    for name, layer in model.named_modules():
        if "bn" in name or "downsample.1" in name:
            if "downsample.1" in name:
                hooks.pop().remove()
            hooks.append(layer.register_forward_hook(lambda mod, inp, out: acts.append(out)))
    model(image)
    for h in hooks:
        h.remove()
    return acts


def released_loop(model, x, y, m, kind, x_masked=None):
    """One released training step's loss, one image at a time."""
    ce = F.cross_entropy(model(x), y)
    total = x.new_zeros(())
    for i in range(len(x)):
        if kind == "actdiff":
            a = released_activations(model, x[i : i + 1])
            b = released_activations(model, x_masked[i : i + 1])
            total = total + torch.stack([torch.linalg.vector_norm(u - v) for u, v in zip(a, b)]).mean()
        else:
            total = total + released_input_grad_penalty(model, x[i : i + 1], m[i : i + 1], kind)
    return ce + LAM * total


def step(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    stats = {n: b.clone() for n, b in model.named_buffers() if "running" in n}
    return grads, stats


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-12))


@pytest.mark.parametrize("kind,arch,constrained", [
    ("rrr", "resnet18-w16", (1, 3)), ("gradmask", "resnet18-w16", (1, 3)), ("actdiff", "resnet18-w16", (1, 3)),
    ("actdiff", "resnet50", (1, 3)), ("rrr", "resnet50", (1, 3)),
    ("rrr", "resnet18-w16", (0, 1, 2, 3)), ("actdiff", "resnet18-w16", (0, 1, 2, 3)),  # every image masked
    ("gradmask", "resnet18-w16", ()), ("actdiff", "resnet18-w16", ()),  # none: zero penalty, statistics only
])
def test_batched_per_sample_step_equals_the_released_per_image_loop(kind, arch, constrained):
    x, y, m = batch(constrained=constrained)
    ours, ref = model_for(arch), model_for(arch)
    seed = 7 if kind == "actdiff" else None
    method = build_method(kind, LAM, profile=OFFICIAL, shuffle_seed=seed)
    parts = method.loss(ours, x, y, m)
    x_masked = shuffle_released(x, m, seed=seed) if kind == "actdiff" else None
    ref_loss = released_loop(ref, x, y, m, kind, x_masked)
    assert (parts["penalty"].item() > 0) == bool(constrained)
    assert parts["loss"].item() == pytest.approx(ref_loss.item(), rel=1e-4)
    g_ours, s_ours = step(ours, parts["loss"])
    g_ref, s_ref = step(ref, ref_loss)
    worst = max(rel(g_ours[n], g_ref[n]) for n in g_ref if g_ref[n].abs().sum() > 0)
    assert worst <= 1e-4, worst
    assert max(rel(s_ours[n], s_ref[n]) for n in s_ref) <= 1e-4
    # It is not the batched-statistics step: that one differs clearly.
    if constrained:
        paper = build_method(kind, LAM).loss(model_for(arch), x, y, m)
        assert abs(paper["loss"].item() - ref_loss.item()) > 1e-3 * abs(ref_loss.item())


def test_per_sample_statistics_are_each_image_alone():
    model = model_for("resnet18-w16")
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    alone = torch.cat([copy.deepcopy(model)(x[i : i + 1]) for i in range(3)])
    with per_sample_bn():
        together = copy.deepcopy(model)(x)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_per_sample_bn_needs_two_values_per_channel():
    model = model_for("resnet18-w16")
    with pytest.raises(DgxError, match="image-size"), per_sample_bn():
        model(torch.randn(2, 3, 32, 32, dtype=torch.float64))  # layer4 is 1x1 at 32 px


def test_released_layers_follow_the_released_hook_rule():
    names = [n for n, _ in released_layers(torchvision.models.resnet50())]
    assert len(names) == 49  # "make sure activations is of len 49"
    assert "layer1.0.downsample.1" in names and "layer1.0.bn3" not in names
    assert "layer1.1.bn3" in names and "bn1" in names
    pre = [n for n, _ in activation_layers(torchvision.models.resnet50())]
    assert len(pre) == 49 and "layer1.0.bn3" in pre and "layer1.0.downsample.1" not in pre


def test_released_tensors_are_read_after_the_in_place_ops():
    """bn1 is read after its ReLU (no negatives); a block's last BN holds the block output."""
    model = model_for("resnet50").eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    acts = dict(zip([n for n, _ in released_layers(model)], released_activations(model, x)))
    assert acts["layer1.0.bn1"].min() >= 0
    block_out = {}
    model.layer1[1].register_forward_hook(lambda mod, inp, out: block_out.setdefault("y", out.clone()))
    acts = dict(zip([n for n, _ in released_layers(model)], released_activations(model, x)))
    torch.testing.assert_close(acts["layer1.1.bn3"], block_out["y"])
    assert acts["layer1.0.downsample.1"].min() < 0  # the shortcut BN output itself, never ReLU'd


def test_released_shuffle_permutes_across_channels_and_keeps_the_foreground():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g)
    m = torch.zeros(2, 1, 16, 16)
    m[:, :, 4:10, 4:10] = 1
    out = shuffle_released(x, m, generator=g)
    fg = m.expand_as(x).bool()
    assert torch.equal(out[fg], x[fg])
    for i in range(2):  # the background values of all channels together are a permutation
        assert torch.equal(out[i][~fg[i]].sort().values, x[i][~fg[i]].sort().values)
    moved_across = (out[:, 0][~fg[:, 0]].unsqueeze(0) == x[:, 1][~fg[:, 1]].unsqueeze(1)).any()
    assert moved_across  # some channel-0 value came from channel 1


def test_released_periphery_shuffle_is_the_same_every_call():
    x = torch.randn(3, 3, 16, 16)
    m = torch.zeros(3, 1, 16, 16)
    m[:, :, 2:6, 2:6] = 1
    a = shuffle_released(x, m, seed=5)
    b = shuffle_released(x[[2, 0, 1]], m[[2, 0, 1]], seed=5)  # another batch composition, another epoch
    torch.testing.assert_close(a[[2, 0, 1]], b)
    assert not torch.equal(a, shuffle_released(x, m, seed=6))
    assert not torch.equal(shuffle_released(x, m), shuffle_released(x, m))


def test_rrr_log_eps_switches_the_penalty_off_at_large_logit_gaps():
    from dgx.methods.rrr import summed_log_probs

    z = torch.tensor([[0.0, 40.0]], requires_grad=True)
    (g_eps,) = torch.autograd.grad(summed_log_probs(z, log_eps=True), z)
    (g_exact,) = torch.autograd.grad(summed_log_probs(z), z)
    assert g_exact.abs().max() > 0.9  # d/dz Σ log p = 1 − 2p: about ±1
    assert g_eps.abs().max() < 1e-3  # released: p₀ ≈ e^−40 < 1e-11 makes log(p₀ + ε) flat
    np.testing.assert_allclose(summed_log_probs(torch.tensor([[0.3, -0.2]]), log_eps=True).item(),
                               summed_log_probs(torch.tensor([[0.3, -0.2]])).item(), rtol=1e-6)


# ---------------------------------------------------------------- the rest of the profile, switch by switch

from dgx.data.base import Split  # noqa: E402
from dgx.data.released import for_profile, pool_of, redraw  # noqa: E402
from dgx.masks.released import released_resize, released_scaled  # noqa: E402
from dgx.models import to_input  # noqa: E402
from tests.helpers import reference_dir, tiny_config, tiny_data  # noqa: E402


def test_official_source_split_is_the_released_stratified_redraw(tmp_path):
    from sklearn.model_selection import StratifiedShuffleSplit

    cfg = tiny_config(profile="official")
    bundle = tiny_data(tmp_path, cfg)
    pool = pool_of(bundle)
    assert len(pool) == len(bundle.train) + len(bundle.val)
    a = for_profile(bundle, OFFICIAL, seed=3, mask="abnormality")
    _, val_idx = next(StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=3)
                      .split(np.zeros(len(pool)), pool.labels))
    assert len(a.val) == len(val_idx) and np.array_equal(a.val.images, pool.images[np.sort(val_idx)])
    assert len(a.train) + len(a.val) == len(pool) and a.val.labels.mean() == pytest.approx(pool.labels.mean(), abs=0.03)
    b = for_profile(bundle, OFFICIAL, seed=4, mask="abnormality")
    assert not np.array_equal(a.val.images, b.val.images)  # redrawn for every seed
    paper = for_profile(bundle, PROFILES["paper"], seed=3, mask="abnormality")
    assert paper.train is bundle.train and paper.val is bundle.val  # paper: the fixed lists


def test_official_cxr_p_needs_the_gaze_pool(tmp_path):
    import dataclasses

    cfg = tiny_config()
    bundle = dataclasses.replace(tiny_data(tmp_path, cfg), name="cxr-p")
    with pytest.raises(DgxError, match="951 images with gaze"):
        pool_of(bundle)
    one = Split(np.zeros((3, 4, 4), np.uint8), np.array([1, 0, 0]))
    with pytest.raises(DgxError, match="2 images of each class"):
        redraw(one, 0)


def test_siim_lists_write_the_gaze_pool_in_list_order():
    from dgx.prep.sources.siim import prepare

    ref = reference_dir()
    frames = prepare(None, metadata_only=True, seed=0, options={"splits": str(ref / "cxr_p_splits.csv")})
    pool = frames["cxr-p.pool"]
    assert len(pool) == 951 and int(pool["label"].sum()) == 205 and set(pool["split"]) == {"pool"}
    import pandas as pd

    listed = pd.read_csv(ref / "cxr_p_splits.csv")
    listed = listed[listed["split"] == "trainval_gaze"]
    assert pool["image"].tolist() == listed["dicom_path"].tolist()  # not re-sorted: the split indexes into it
    assert len(frames["cxr-p.train"]) == 947  # the paper profile's lists are unchanged


def test_cxr_normalization_is_one_grey_statistic_on_three_channels():
    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    x = to_input(images, normalization="cxr")
    assert x.shape == (1, 3, 1, 2)
    for c in range(3):
        assert x[0, c, 0, 0].item() == pytest.approx(-0.48865 / 0.24621, rel=1e-5)
        assert x[0, c, 0, 1].item() == pytest.approx((1 - 0.48865) / 0.24621, rel=1e-5)
    imagenet = to_input(images)
    assert imagenet[0, 0, 0, 0].item() == pytest.approx(-0.485 / 0.229, rel=1e-5)
    assert imagenet[0, 0, 0, 0] != imagenet[0, 2, 0, 0]


def test_released_scaled_mask_hand_example():
    m = np.zeros((48, 48), np.uint8)
    m[16, 16] = 1  # in 3-px cell (5, 5): rows and columns 15..17
    out = released_scaled(m, 16)
    rows = np.flatnonzero(out.any(1))
    # bilinear from 16 to 48: output pixel r samples input (r + 0.5)/3 − 0.5, nonzero strictly inside (4, 6)
    assert rows.tolist() == [14, 15, 16, 17, 18] and np.flatnonzero(out.any(0)).tolist() == rows.tolist()
    from dgx.masks import scaled_mask

    assert np.flatnonzero(scaled_mask(m, 16).any(1)).tolist() == [15, 16, 17]  # dgx: the cell itself


def test_released_abnormality_dilates_real_masks_to_the_measured_ratio():
    """dgx's any-pooled masks are a fraction of the released area on real SIIM positives (a median 0.66x on the
    156 single-region positives of CXR-P's pool)."""
    from dgx.masks.rle import abnormality_mask, load_rle_table

    table = load_rle_table()
    ids = sorted(i for i, r in table.items() if r)[:40]
    ratios = []
    for i in ids:
        full = abnormality_mask(table[i])
        ours = abnormality_mask(table[i], 224)
        rel_mask = released_resize(full, 224)
        assert (rel_mask >= ours).all()
        ratios.append(ours.sum() / rel_mask.sum())
    assert 0.5 < float(np.median(ratios)) < 0.85, np.median(ratios)


def test_official_masks_replace_the_training_masks(tmp_path):
    cfg = tiny_config()
    bundle = tiny_data(tmp_path, cfg)
    scaled = for_profile(bundle, OFFICIAL, 0, "scaled").train
    abn = scaled.masks["abnormality"]
    constrained = abn.reshape(len(abn), -1).min(1) == 0
    assert constrained.any()
    assert np.array_equal(scaled.masks["scaled"][constrained], released_scaled(abn[constrained], 16))
    assert scaled.masks["scaled"][~constrained].all()
    # decoy-cxr draws its masks at the training size: the released resize is the identity there
    same = for_profile(bundle, OFFICIAL, 0, "abnormality").train
    assert np.array_equal(same.masks["abnormality"], abn)


def test_official_selection_takes_the_last_best_accuracy(tmp_path):
    from dgx.train import train

    cfg = tiny_config(method="erm", profile="official", image_size=64, epochs=3, lr=1e-2)
    result = train(cfg, tiny_data(tmp_path, cfg), tmp_path / "run", progress=False)
    accs = [h["val_accuracy"] for h in result.history]
    assert result.selection == "accuracy"
    assert result.best_epoch == max(i + 1 for i, a in enumerate(accs) if a == max(accs))  # >=: later ties win
    assert result.val_auroc == result.history[result.best_epoch - 1]["val_auroc"]
    paper = train(tiny_config(method="erm", image_size=64, epochs=3, lr=1e-2), tiny_data(tmp_path, cfg),
                  tmp_path / "paper", progress=False)
    aurocs = [h["val_auroc"] for h in paper.history]
    assert paper.selection == "auroc" and paper.best_epoch == aurocs.index(max(aurocs)) + 1  # strict: first


def test_profile_is_part_of_the_run_id_and_the_record():
    assert tiny_config().run_id("fp") != tiny_config(profile="official").run_id("fp")
    assert tiny_config(profile="official").to_dict()["profile"] == "official"
