"""Shared fixtures: keep every test's runs, data and W&B files inside tmp_path."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DGX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DGX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DGX_STORAGE", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # --lung-model auto must not find a developer's real PSPNet weights during tests.
    monkeypatch.setenv("DGX_LUNG_MODEL", str(tmp_path / "no-lung-model.pth"))
    monkeypatch.chdir(tmp_path)  # a stray .env in the repo must not leak into tests
    from dgx.config import get_settings

    get_settings.cache_clear()
    torch.set_num_threads(2)
    yield
    get_settings.cache_clear()
    from dgx.progress import set_progress

    set_progress(True)  # a CLI test's --quiet must not silence the next test
