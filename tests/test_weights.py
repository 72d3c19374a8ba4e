"""`--weights imagenet` is the paper's IMAGENET1K_V1 (torchvision's pretrained=True), made exact in the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from dgx.errors import DgxError
from dgx.models import build_model, resolve_weights
from dgx.resolve import resolve_config
from dgx.spec import TrainRequest


def test_imagenet_means_v1_and_tags_are_checked():
    assert resolve_weights("resnet50", "imagenet") == "imagenet:IMAGENET1K_V1"  # torchvision's DEFAULT is V2
    assert resolve_weights("resnet50", "imagenet:IMAGENET1K_V2") == "imagenet:IMAGENET1K_V2"
    assert resolve_weights("resnet18", "none") == "none" and resolve_weights("resnet18", "w.pt") == "w.pt"
    with pytest.raises(DgxError, match="has no weights 'IMAGENET1K_V2'"):
        resolve_weights("resnet18", "imagenet:IMAGENET1K_V2")  # resnet18 has only V1
    with pytest.raises(DgxError, match="no ImageNet weights"):
        resolve_weights("resnet18-w16", "imagenet")


def test_the_paper_budget_records_v1_in_the_config_and_run_id():
    kw = dict(model=None, image_size=None, epochs=None, batch_size=16)
    paper, _ = resolve_config(TrainRequest(method="rrr", mask="periphery", data="decoy-cxr", budget="paper", **kw))
    assert paper.weights == "imagenet:IMAGENET1K_V1" and paper.model == "resnet50"
    v2, _ = resolve_config(TrainRequest(method="rrr", mask="periphery", data="decoy-cxr", budget="paper", weights="imagenet:IMAGENET1K_V2", **kw))
    assert paper.run_id() != v2.run_id()  # another checkpoint is another run


def test_missing_v1_file_is_named_in_the_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(DgxError) as err:
        build_model("resnet50", "imagenet")
    v1 = Path(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url).name
    assert v1 in str(err.value) and "IMAGENET1K_V1" in str(err.value)
    assert Path(torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url).name not in str(err.value)
