"""Shared fixtures: keep every test's runs, data and W&B files inside tmp_path.

The suite runs in two processes (`pytest -n 2 --dist loadfile --no-loadscope-reorder`, the README's test command): each file's tests
run in one process, in order (a module fixture such as the bad-input battery runs once; the PostgreSQL tests
of a file never overlap; those of different files use their own study names and reset only their own
connections), and torch work takes one thread per process (two processes on two cores), as dgx's fair share
would give it. (`--dist loadgroup` would group across files, but pytest-xdist 3.8 cannot mark groups under
pytest 9, whose node ids it no longer rewrites.)
"""

from __future__ import annotations

import os

THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2  # one per process when two test processes share the cores
# Set before torch and numpy load, so their OpenMP and BLAS pools start at THREADS in this process, and every
# subprocess a test starts (dgx commands and workers, benches, spawned pools) inherits the count unless it sets
# its own: torch's default (every core) in a subprocess beside the other test process oversubscribes the cores,
# and an oversubscribed training runs up to ~40x slower (dgx/threads.py).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = str(THREADS)
# W&B (offline in every test, as users run it) waits 30 s for its wandb-core service to start and 90 s for
# wandb.init: limits a machine loaded by other jobs can reach. Here, in-process and in every subprocess, they
# only guard against a hang (tests/helpers.py: HANG_S).
os.environ["WANDB__SERVICE_WAIT"] = os.environ["WANDB_INIT_TIMEOUT"] = "1800"

# The same count for dgx's trainings outside a test too: a module fixture (test_heal's finished run,
# test_subgroups' trained seeds) is set up before _isolated below, and with no DGX_THREADS it took its fair share,
# 1 or 2 threads depending on what the other test process ran, then failed to match the tests' 1-thread retrain.
os.environ["DGX_THREADS"] = str(THREADS)

import pytest
import torch

torch.set_num_threads(THREADS)

# The longest files first (measured with --durations), so the two test processes finish together instead of one
# waiting for the other's last slow file (--no-loadscope-reorder keeps this order; xdist would otherwise put the
# files with the most tests first, and these one-test files last).
# The mid-sized files (10-30 s) follow, so that the run ends on small files: the last file assigned sets the tail.
LONGEST_FIRST = ("test_decoy_effect.py", "test_decoy_mnist.py", "test_bad_inputs.py", "test_faults.py",
                 "test_workers.py", "test_bench.py", "test_pack.py", "test_lung_gaze_masks.py", "test_cli.py",
                 "test_train.py", "test_official.py", "test_figures.py", "test_report_shapes.py",
                 "test_prune_replay.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DGX_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DGX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DGX_STORAGE", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # as users run it: W&B on, written locally (README: Storage and tracking)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    # --lung-model auto must not find a developer's real PSPNet weights during tests.
    monkeypatch.setenv("DGX_LUNG_MODEL", str(tmp_path / "no-lung-model.pth"))
    monkeypatch.chdir(tmp_path)  # a stray .env in the repo must not leak into tests
    from dgx.config import get_settings

    get_settings.cache_clear()
    torch.set_num_threads(THREADS)
    # A fixed thread count for dgx's own trainings too: its fair share would change with what the other test
    # process is running, and CPU kernels round differently with the thread count (tests compare scores).
    monkeypatch.setenv("DGX_THREADS", str(THREADS))
    yield
    get_settings.cache_clear()
    from dgx.progress import set_progress

    set_progress(True)  # a CLI test's --quiet must not silence the next test
