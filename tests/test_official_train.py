"""``--profile official``'s training switches: the last partial batch trains (``last_batch``), and CUDA runs in
fp32 (``precision``), as the released ``dataloader.py:fetch_dataloaders`` and ``train.py`` did."""

import contextlib
import math
import warnings

import pytest
import torch

from dgx import runs
from dgx.profiles import PROFILES
from dgx.resolve import check_steps
from dgx.runs import run_dir
from dgx.scoring import autocast
from dgx.train import train
from tests.helpers import tiny_config, tiny_data


@pytest.mark.parametrize("profile,batch,images", [("official", 24, 128), ("paper", 20, 96)])
def test_official_trains_the_last_partial_batch_and_paper_drops_it(tmp_path, profile, batch, images):
    """decoy-cxr's 96 + 64 source images: official redraws 80% of them (128) to train on, paper its 96."""
    cfg = tiny_config(profile=profile, batch_size=batch, epochs=1)
    folder = run_dir(tmp_path / "runs", cfg.run_id())
    train(cfg, tiny_data(tmp_path, cfg), folder, device="cpu", progress=False)
    state = torch.load(folder / runs.LAST, weights_only=True)["opt"]["state"]
    steps = math.ceil(images / batch) if profile == "official" else images // batch
    assert int(state[0]["step"]) == steps  # official: 6 steps of 24 (the last of 8); paper: 4 of 20


def test_a_batch_larger_than_the_source_fails_only_where_the_partial_batch_is_dropped():
    check_steps(10, 16, "d", "n_train", PROFILES["official"])  # one partial batch: one step
    with pytest.raises(Exception, match="no optimizer step"):
        check_steps(10, 16, "d", "n_train", PROFILES["paper"])


def test_official_runs_cuda_in_fp32_and_paper_in_bf16_autocast():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CUDA here: torch warns that it would disable the context
        paper = autocast(cuda, PROFILES["paper"])
    assert isinstance(paper, torch.autocast) and paper.fast_dtype == torch.bfloat16
    assert isinstance(autocast(cuda, PROFILES["official"]), contextlib.nullcontext)
    assert isinstance(autocast(cpu, PROFILES["paper"]), contextlib.nullcontext)  # the CPU is fp32 either way
