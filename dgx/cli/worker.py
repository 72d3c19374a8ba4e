"""``dgx worker``: join sweeps in a shared storage and train their trials until none are left."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dgx.cli import common as c


def worker(
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL shared by the workers "
                                                   "(journal:///path or postgresql://...). Default: DGX_STORAGE.")] = None,
    study: Annotated[Optional[list[str]], typer.Option("--study", help="Study to join, repeatable. Default: every "
                                                       "study `dgx sweep` created in the storage.")] = None,
    device: c.DeviceOpt = "auto",
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads for torch (0 = torch's default).")] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    pack: Annotated[int, typer.Option("--pack", min=1, help="Train up to this many grid points of one λ and seed "
                                      "(differing in LR and WD) as one wide network: batch 16 leaves a large GPU "
                                      "mostly idle. Results equal training each alone (README: Packed trials).")] = 1,
) -> None:
    """Take trials from the studies until every grid point and seed is done, then exit.

    Start any number of workers, on any machines that reach the storage and
    share DGX_RUNS_DIR and DGX_DATA_DIR: each grid point trains exactly once, a
    killed worker's trial is retried by another and resumes from its last epoch.
    """
    # the library loads when the command runs (dgx --help stays fast)
    from dgx.checks import check_device_name, check_name, check_storage_url
    from dgx.config import get_settings

    for name in study or []:
        check_name("--study", name)
    check_device_name(device)
    check_storage_url(storage)
    from dgx.sweep.launch import run_worker  # checks the storage before it imports torch

    url = storage or get_settings().default_storage()
    run_worker(url, list(study) if study else None, device, progress=progress, threads=threads, pack=pack)
