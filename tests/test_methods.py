"""The methods' math against independent recomputations.

Batched penalties are checked against per-sample loops (eval-mode batch norm,
where samples are independent), against finite differences, and against hand
examples; the ActDiff hooks against separately captured pre-ReLU activations.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dgx.errors import DgxError
from dgx.methods import METHODS, build_method
from dgx.methods.actdiff import activation_layers, masked_copies, shuffle_background
from dgx.methods.rrr import input_gradient


def tiny_resnet(seed: int = 0, double: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=2)
    # Random running stats, so eval-mode batch norm is not the identity.
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return model.double() if double else model


def batch(n: int = 4, size: int = 16, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g, dtype=dtype)
    y = torch.tensor([0, 1] * (n // 2))
    m = torch.zeros(n, 1, size, size, dtype=dtype)
    m[:, :, 4:12, 3:10] = 1  # a rectangle the model "may look at"
    return x, y, m


def test_rrr_penalty_matches_per_sample_loop():
    model = tiny_resnet().eval()
    x, y, m = batch()
    parts = build_method("rrr", lam=0.5).loss(model, x, y, m)
    per_sample = 0.0
    for i in range(len(x)):  # the reference implementation's way: one image at a time
        xi = x[i : i + 1].clone().requires_grad_(True)
        logp = F.log_softmax(model(xi), dim=1).sum()
        (gi,) = torch.autograd.grad(logp, xi)
        per_sample += ((1 - m[i : i + 1]) * gi).pow(2).sum().item()
    assert parts["penalty"].item() == pytest.approx(per_sample, rel=1e-4)
    assert parts["loss"].item() == pytest.approx(parts["ce"].item() + 0.5 * per_sample, rel=1e-5)
    assert per_sample > 0


def test_rrr_input_gradient_matches_finite_differences():
    model = tiny_resnet(double=True).eval()
    x, _, _ = batch(n=2, size=12, dtype=torch.float64)
    _, grad = input_gradient(model, x)

    def f(z):
        return F.log_softmax(model(z), dim=1).sum().item()

    eps = 1e-6
    for idx in [(0, 0, 3, 4), (1, 2, 7, 7), (0, 1, 11, 0), (1, 0, 5, 9)]:
        e = torch.zeros_like(x)
        e[idx] = eps
        fd = (f(x + e) - f(x - e)) / (2 * eps)
        assert grad[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_rrr_penalty_parameter_gradient_matches_finite_differences():
    """The double backward (create_graph) reaches the weights correctly."""
    model = tiny_resnet(double=True).eval()
    x, y, m = batch(n=2, size=12, dtype=torch.float64)
    rrr = build_method("rrr", lam=1.0)
    weight = model.fc.weight
    penalty = rrr.loss(model, x, y, m)["penalty"]
    (analytic,) = torch.autograd.grad(penalty, weight)
    eps = 1e-4  # the penalty is ~1e-3: smaller steps drown in float64 round-off
    for idx in [(0, 0), (1, 37), (0, 511)]:
        with torch.no_grad():
            weight[idx] += eps
        plus = rrr.loss(model, x, y, m)["penalty"].item()
        with torch.no_grad():
            weight[idx] -= 2 * eps
        minus = rrr.loss(model, x, y, m)["penalty"].item()
        with torch.no_grad():
            weight[idx] += eps
        assert analytic[idx].item() == pytest.approx((plus - minus) / (2 * eps), rel=1e-2)


def test_rrr_hand_example_linear_model():
    """Linear logits z = W·x: ∂Σ_k log p_k/∂x = Σ_k (w_k − 2·p̄·w̄)... computed in closed form."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 2, bias=False))
    x = torch.randn(1, 3, 2, 2)
    m = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    w = lin[1].weight.detach()  # (2, 12)
    p = torch.softmax(lin(x), dim=1)[0].detach()
    # d/dx [log p0 + log p1] = (w0 - Σ p_j w_j) + (w1 - Σ p_j w_j) = w0 + w1 - 2 Σ p_j w_j
    g = (w[0] + w[1] - 2 * (p[0] * w[0] + p[1] * w[1])).view(1, 3, 2, 2)
    expected = ((1 - m) * g).pow(2).sum().item()
    got = build_method("rrr", lam=1.0).loss(lin, x, torch.tensor([1]), m)["penalty"].item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_gradmask_penalty_matches_per_sample_loop():
    model = tiny_resnet().eval()
    x, y, m = batch()
    parts = build_method("gradmask", lam=2.0).loss(model, x, y, m)
    expected = 0.0
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        z = model(xi)
        (gi,) = torch.autograd.grad((z[0, 1] - z[0, 0]).abs(), xi)
        expected += ((1 - m[i : i + 1]) * gi).abs().sum().item()
    assert parts["penalty"].item() == pytest.approx(expected, rel=1e-4)
    assert expected > 0


def test_shuffle_keeps_mask_pixels_and_permutes_only_background():
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)  # every value unique
    m = torch.zeros(2, 1, 8, 8)
    m[0, :, 2:6, 2:6] = 1
    m[1, :, 0:3, :] = 1
    out = shuffle_background(x, m)
    fg = m.expand_as(x).bool()
    assert torch.equal(out[fg], x[fg])  # in-mask pixels untouched
    for i in range(2):
        bg = ~m[i, 0].bool()
        # background values are a permutation of the same image's background values, per channel
        for c in range(3):
            assert torch.equal(out[i, c][bg].sort().values, x[i, c][bg].sort().values)
        # all channels moved together: the channel offsets are preserved pixel by pixel
        assert torch.equal(out[i, 1] - out[i, 0], x[i, 1] - x[i, 0])
        moved = (out[i, 0][bg] != x[i, 0][bg]).float().mean().item()
        assert moved > 0.8  # spatial information destroyed, not an identity


def test_shuffle_is_independent_per_image():
    torch.manual_seed(1)
    x = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).repeat(2, 1, 1, 1)
    m = torch.zeros(2, 1, 8, 8)
    out = shuffle_background(x, m)
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("name", ["rrr", "gradmask", "actdiff"])
def test_all_ones_mask_gives_zero_penalty(name):
    model = tiny_resnet().train()
    x, y, _ = batch()
    ones = torch.ones(len(x), 1, x.shape[-2], x.shape[-1])
    parts = build_method(name, lam=1.0).loss(model, x, y, ones)
    assert parts["penalty"].item() == 0.0
    assert parts["loss"].item() == pytest.approx(parts["ce"].item())
    parts["loss"].backward()  # the zero-distance norm must still give finite gradients
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_actdiff_layer_counts():
    assert len(activation_layers(torchvision.models.resnet50())) == 49
    assert len(activation_layers(torchvision.models.resnet18())) == 17


def _capture_pre_and_post(model, inp):
    """Independently capture each hooked norm layer's output before and after the in-place ReLU."""
    pre, post_refs = [], []

    def hook(mod, _inp, out):
        pre.append(out.detach().clone())
        post_refs.append(out)  # the reference code's mistake: a reference the ReLU will overwrite

    handles = [mod.register_forward_hook(hook) for _, mod in activation_layers(model)]
    with torch.no_grad():
        model(inp)
    for h in handles:
        h.remove()
    return pre, [t.detach() for t in post_refs]


@pytest.mark.parametrize("layers", ["all", "last"])
def test_actdiff_penalty_uses_pre_activation_outputs(layers):
    model = tiny_resnet().eval()
    x, y, m = batch()
    torch.manual_seed(5)
    parts = build_method("actdiff", lam=1.0, options={"layers": layers}).loss(model, x, y, m)
    torch.manual_seed(5)
    x_masked = shuffle_background(x, m)  # every row of batch() has background: the very shuffle loss() drew
    pre, post = _capture_pre_and_post(model, torch.cat([x, x_masked]))
    assert any((p < 0).any() for p in pre)  # pre-activations include negative numbers
    assert all((p >= 0).all() for p in post[:1])  # the overwritten references are clipped by the ReLU
    chosen = pre if layers == "all" else pre[-1:]
    b = len(x)
    expected = sum(
        torch.stack([(a[i] - a[b + i]).norm() for a in chosen]).mean() for i in range(b)
    ).item()
    assert parts["penalty"].item() == pytest.approx(expected, rel=1e-4)
    if layers == "all":
        buggy = sum(torch.stack([(a[i] - a[b + i]).norm() for a in post]).mean() for i in range(b)).item()
        assert abs(buggy - expected) > 1e-3 * expected


def test_actdiff_one_batched_forward_of_clean_and_shuffled_rows():
    model = tiny_resnet().train()
    calls = []
    model.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    x, y, m = batch()
    build_method("actdiff", lam=1.0).loss(model, x, y, m)
    assert calls == [2 * len(x)]  # every mask has background: B clean + B shuffled
    calls.clear()
    m[1:3] = 1.0  # two all-ones masks (negatives): nothing to shuffle, no second copy
    build_method("actdiff", lam=1.0).loss(model, x, y, m)
    assert calls == [len(x) + 2]


def test_actdiff_skipping_unmasked_rows_equals_the_full_double_batch():
    """In eval mode the B + P forward gives the penalty and gradients of the 2B forward with x_masked = x
    for all-ones rows (a hand-built 2B version of the same hooks, independent of the row selection)."""
    model = tiny_resnet().double().eval()
    x, y, m = batch(n=6, dtype=torch.float64)
    m[[0, 3, 4]] = 1.0
    torch.manual_seed(3)
    parts = build_method("actdiff", lam=0.7).loss(model, x, y, m)
    model.zero_grad()
    parts["loss"].backward()
    got = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(3)
    rows, shuffled = masked_copies(x, m)
    assert rows.tolist() == [1, 2, 5]
    x_masked = x.clone()
    x_masked[rows] = shuffled
    layers = [mod for _, mod in activation_layers(model)]
    acts = []
    handles = [layer.register_forward_hook(lambda mod, inp, out: acts.append(out.clone())) for layer in layers]
    logits = model(torch.cat([x, x_masked]))
    for h in handles:
        h.remove()
    b = len(x)
    dists = torch.stack([(a[:b] - a[b:]).flatten(1).norm(dim=1) for a in acts])  # (layers, B)
    assert (dists[:, [0, 3, 4]] == 0).all()
    penalty = dists.mean(0).sum()
    loss = torch.nn.functional.cross_entropy(logits[:b], y) + 0.7 * penalty
    model.zero_grad()
    loss.backward()
    assert parts["penalty"].item() == pytest.approx(penalty.item(), rel=1e-6)  # the method's norms are float32
    for a, e in zip(got, (p.grad for p in model.parameters())):
        assert torch.allclose(a, e, rtol=1e-5, atol=1e-8)


def test_actdiff_batch_without_any_mask_is_plain_erm():
    model = tiny_resnet().eval()
    x, y, _ = batch()
    parts = build_method("actdiff", lam=1.0).loss(model, x, y, torch.ones(len(x), 1, 16, 16))
    assert parts["penalty"].item() == 0.0
    assert parts["loss"].item() == pytest.approx(build_method("erm").loss(model, x, y, None)["loss"].item())


def test_registry_and_bad_arguments():
    assert set(METHODS) == {"erm", "actdiff", "rrr", "gradmask"}
    with pytest.raises(DgxError, match="unknown method 'nope'; choose from: actdiff, erm, gradmask, rrr"):
        build_method("nope")
    with pytest.raises(DgxError, match="non-negative"):
        build_method("rrr", lam=-1.0)
    with pytest.raises(DgxError, match="non-negative"):
        build_method("rrr", lam=float("nan"))
    with pytest.raises(DgxError, match="layers must be one of all, last"):
        build_method("actdiff", lam=1.0, options={"layers": "middle"})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_keeps_the_contract(name):
    """Adding a method is one file plus one registry line: this runs over whatever is registered."""
    import dataclasses

    from dgx.methods import display_name, method_class, paper_epochs, uses_mask
    from dgx.profiles import PROFILES
    from dgx.spec import TrainConfig

    cls = method_class(name)
    assert cls.name == name and display_name(name) == cls.display_name != ""
    assert isinstance(uses_mask(name), bool) and paper_epochs(name) > 0
    # Its options are strings with defaults, stored in configs as METHOD_KEY (dgx/spec.py)
    assert dataclasses.is_dataclass(cls.Options) and TrainConfig(method=name).options() == cls.Options()
    for field in dataclasses.fields(cls.Options):
        assert isinstance(field.default, str) and f"{name}_{field.name}" in TrainConfig(method=name).to_dict()
    model = tiny_resnet().train()
    x, y, m = batch(size=64)
    for profile in PROFILES.values():
        method = cls.from_config(TrainConfig(method=name, lam=0.1), profile)
        assert isinstance(method, cls) and method.lam == (0.1 if cls.uses_mask else 0.0)
        parts = method.loss(model, x, y, m)
        assert {"loss", "ce"} <= set(parts) and torch.isfinite(parts["loss"])
        if cls.uses_mask:
            assert parts["penalty"] > 0  # the rectangle leaves background to constrain
        model.zero_grad()
        parts["loss"].backward()
        assert all(p.grad is not None for p in model.fc.parameters())
