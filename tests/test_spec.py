"""The requests (dgx/spec.py): typed and checked once; method options; run folders written before
method options moved out of TrainConfig still resolve."""

import dataclasses
import hashlib
import json

import pytest

from dgx.errors import DgxError
from dgx.resolve import resolve_config
from dgx.spec import ReproduceRequest, SweepRequest, TrainConfig, TrainRequest


def old_run_id(cfg: TrainConfig, layers: str, data: str = "") -> str:
    """The run-folder name as dgx computed it while ``actdiff_layers`` was a TrainConfig field (recomputed
    here from the fields, independently of TrainConfig.to_dict)."""
    fields = [f.name for f in dataclasses.fields(cfg) if f.name != "method_options"]
    d = {}
    for name in fields:
        if name == "negative_masks":
            d["actdiff_layers"] = layers  # it sat between seed and negative_masks
        d[name] = getattr(cfg, name)
    d["data_options"] = dict(cfg.data_options)
    d["epochs"] = cfg.num_epochs
    blob = json.dumps({**d, "data_fingerprint": data}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.mark.parametrize("method,mask,opts,layers", [
    ("erm", None, (), "all"),
    ("rrr", "periphery", (), "all"),
    ("actdiff", "periphery", (), "all"),
    ("actdiff", "abnormality", ("layers=last",), "last"),
])
def test_existing_run_folders_keep_their_names(method, mask, opts, layers):
    cfg, _ = resolve_config(TrainRequest(method=method, mask=mask, method_opts=opts, data_opts=("seed=3",)))
    assert cfg.run_id("abc") == old_run_id(cfg, layers, "abc")
    assert cfg.to_dict()["actdiff_layers"] == layers
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # a stored config (study, trial, checkpoint) reads back


def test_method_options_are_the_methods_own():
    cfg, _ = resolve_config(TrainRequest(method="actdiff", mask="periphery", method_opts=("layers=last",)))
    assert cfg.options().layers == "last" and cfg.method_options == (("layers", "last"),)
    assert cfg.options() != resolve_config(TrainRequest(method="actdiff", mask="periphery"))[0].options()
    with pytest.raises(DgxError, match="method rrr has no option 'layers'"):
        TrainRequest(method="rrr", method_opts=("layers=last",)).check()
    with pytest.raises(DgxError, match="layers must be one of all, last"):
        TrainRequest(method="actdiff", method_opts=("layers=middle",)).check()
    with pytest.raises(DgxError, match="KEY=VALUE"):
        TrainRequest(method="actdiff", method_opts=("layers",)).check()


def test_a_renamed_option_fails_loudly():
    with pytest.raises(TypeError):
        TrainRequest(method="rrr", actdiff_layers="all")  # the old field: no silent drop
    with pytest.raises(TypeError):
        SweepRequest(train=TrainRequest(method="rrr"), sampler_name="grid")
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainRequest(method="rrr").seed = 1


def test_each_request_checks_what_its_text_shows():
    with pytest.raises(DgxError, match="--lr must be a positive number"):
        TrainRequest(method="rrr", lr=0.0).check()
    with pytest.raises(DgxError, match="unknown sampler"):
        SweepRequest(train=TrainRequest(method="rrr"), sampler="bayes").check()
    with pytest.raises(DgxError, match="--pack must be >= 1"):
        SweepRequest(train=TrainRequest(method="rrr"), pack=0).check()
    with pytest.raises(DgxError, match="unknown pruner"):
        ReproduceRequest("table1", pruner="sometimes").check()
    assert SweepRequest(train=TrainRequest(method="rrr", mask="periphery")).check().train.method == "rrr"


def test_reproduce_overrides_reach_each_experiment():
    req = ReproduceRequest("table1", data="decoy-cxr", epochs=1, profile="official")
    train = req.train("rrr", "periphery", "cxr-p", "paper", "paper")
    assert (train.data, train.budget, train.epochs, train.profile, train.mask) == \
        ("decoy-cxr", "paper", 1, "official", "periphery")
