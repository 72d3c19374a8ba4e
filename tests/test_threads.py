"""Each training takes its fair share of the cores: cores // trainings running on this machine (dgx/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dgx import threads


@pytest.fixture
def registry(tmp_path, monkeypatch):
    folder = tmp_path / "registry"
    monkeypatch.setattr(threads, "registry", lambda: folder)
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_running_counts_live_trainings_and_drops_dead_ones(registry):
    registry.mkdir()
    dead = _dead_pid()
    for pid in (os.getpid(), os.getppid(), dead):
        (registry / str(pid)).touch()
    assert threads.running() == 2
    assert not (registry / str(dead)).exists()


def test_the_share_is_cores_over_trainings_at_least_one_unless_pinned(registry, monkeypatch):
    monkeypatch.setattr(threads, "cores", lambda: 4)
    registry.mkdir()
    (registry / str(os.getppid())).touch()  # another training is running
    with threads.training_share(pinned=0) as share:
        assert (registry / str(os.getpid())).exists()
        assert share.threads == 2 == torch.get_num_threads()
        with threads.training_share(pinned=0):  # a pack or a sweep inside: registered once, not removed
            pass
        assert (registry / str(os.getpid())).exists()
    assert not (registry / str(os.getpid())).exists()
    monkeypatch.setattr(threads, "cores", lambda: 1)
    assert threads.fair_share() == 1
    assert threads.fair_share(pinned=3) == 3


def test_dgx_threads_pins_the_count(registry, monkeypatch):
    from dgx.config import get_settings

    monkeypatch.setenv("DGX_THREADS", "1")
    get_settings.cache_clear()
    with threads.training_share() as share:
        assert share.threads == 1 == torch.get_num_threads()
