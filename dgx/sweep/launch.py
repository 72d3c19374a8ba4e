"""Starting workers: in this process, as local processes (one per GPU), or as SLURM jobs via submitit.

Every worker runs :func:`run_worker`, the same code as ``dgx worker``: it joins
the named studies in a shared storage and takes trials until none are left
(:mod:`dgx.sweep.queue` keeps each grid point exactly once). The launcher only
decides where those workers run:

- ``process``: ``N`` child processes on this machine, each pinned to one GPU
  through ``CUDA_VISIBLE_DEVICES`` (``--gpus 0,1``), or ``N`` CPU workers that
  split the cores between them;
- ``slurm``: ``N`` SLURM jobs through submitit (partition, time limit, one GPU
  each); ``local`` runs the same submitit path with its local executor, which
  is how the tests exercise it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from dgx.checks import LAUNCHERS, check_device, check_folder, check_name, parse_gpus, storage_file
from dgx.config import get_settings
from dgx.errors import DgxError, unknown_choice
from dgx.storage import open_storage, shown_url
from dgx.threads import pin

log = logging.getLogger("dgx")



@dataclass(frozen=True)
class WorkerSpec:
    """Where and how the workers run (from ``dgx sweep --workers/--gpus/--launcher ...``)."""

    workers: int = 1
    gpus: tuple[str, ...] = ()  # CUDA device ids, one per worker; empty = CPU workers
    launcher: str = "process"
    partition: str = ""  # slurm only
    time_min: int = 24 * 60  # slurm only: job time limit
    cpus_per_worker: int = 0  # 0 = this machine's cores / workers (process), 8 (slurm)
    trials_per_gpu: int = 1  # process launcher: workers sharing each GPU (trial packing)
    pack: int = 1  # each worker trains up to this many grid points as one pack (dgx/pack.py)

    def check(self, storage_url: str) -> None:
        if self.launcher not in LAUNCHERS:
            raise unknown_choice("launcher", self.launcher, LAUNCHERS)
        if self.launcher != "process" and importlib.util.find_spec("submitit") is None:
            raise DgxError(f"--launcher {self.launcher} needs submitit, which is not installed; pip install submitit, "
                           "or use --launcher process")
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if self.launcher == "slurm" and missing:
            raise DgxError(f"--launcher slurm needs SLURM's sbatch and srun, and this machine lacks {' and '.join(missing)}; "
                           "run the sweep on a SLURM login node, or use --launcher process (this machine's cores/GPUs)")
        if self.workers < 0:
            raise DgxError(f"--workers must be >= 0, got {self.workers}")
        if self.trials_per_gpu < 1:
            raise DgxError(f"--trials-per-gpu must be >= 1, got {self.trials_per_gpu}")
        if self.trials_per_gpu > 1 and not self.gpus:
            raise DgxError("--trials-per-gpu packs trials onto GPUs; give them with --gpus, e.g. --gpus 0 --trials-per-gpu 4")
        if self.gpus and self.workers and len(self.gpus) * self.trials_per_gpu != self.workers:
            raise DgxError(f"--gpus lists {len(self.gpus)} device(s) x {self.trials_per_gpu} trial(s) per GPU for "
                           f"--workers {self.workers}; give one GPU per worker, e.g. --workers 2 --gpus 0,1 "
                           "(or leave --workers out to default to it)")
        if self.parallel and storage_url.startswith("sqlite"):
            beside = (storage_file(storage_url) or Path("runs/dgx.db")).with_suffix(".journal").resolve()
            raise DgxError(f"storage {shown_url(storage_url)!r} is for one process; several workers need a shared one: "
                           f"--storage journal://{beside} (one machine or NFS) or postgresql://user@host/db")

    def device_of(self, i: int) -> str | None:
        """CUDA_VISIBLE_DEVICES of worker ``i``: GPUs in turn, each taken ``trials_per_gpu`` times."""
        return self.gpus[i // self.trials_per_gpu] if self.gpus else None

    @property
    def parallel(self) -> bool:
        return self.workers != 1 or self.launcher != "process"


def run_worker(storage_url: str, studies: list[str] | None = None, device: str = "auto",
               progress: bool = True, threads: int = 0, pack: int = 1) -> dict[str, int]:
    """Join ``studies`` (default: every dgx search study in the storage) and work until none has work left,
    training up to ``pack`` grid points of one λ and seed at a time as one pack.

    Returns counts of what this worker did: trials trained, duplicates closed, lost trials reaped.
    """
    settings = get_settings()
    for name in studies or []:
        check_name("--study", name)
    check_device(device)
    check_folder(settings.runs_dir, "DGX_RUNS_DIR")
    queue_hint = (f"queue a sweep first with `dgx sweep METHOD --mask MASK --workers 0 --storage "
                  f"{shown_url(storage_url)}`, then start workers")
    path = storage_file(storage_url)
    if path is not None and not path.is_file():
        unknown = f"unknown study {', '.join(map(repr, studies))}: " if studies else ""
        raise DgxError(f"{unknown}storage {shown_url(storage_url)} does not exist, so there is nothing to work on; "
                       f"{queue_hint} (or pass --storage to the sweep's storage)")
    storage = open_storage(storage_url)
    names = studies or dgx_studies(storage)
    if not names:
        raise DgxError(f"storage {shown_url(storage_url)} holds no dgx sweep, so there is nothing to work on; "
                       f"{queue_hint}")
    known = set(optuna.get_all_study_names(storage))
    for name in names:
        if name not in known:
            raise unknown_choice("study", name, sorted(dgx_studies(storage)) or ["(none: run `dgx sweep` first)"])
    # torch and the training code: only once the storage holds work
    import torch
    from dgx.resolve import draws_of
    from dgx.sweep.plan import SweepPlan
    from dgx.sweep.study import make_pruner, make_sampler, work

    if threads:
        pin(threads)  # every training of this worker, instead of its fair share
        torch.set_num_threads(threads)
    data_cache: dict = {}
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        plan = SweepPlan.from_study(study, device)
        plan = replace(plan, storage=storage_url, pack=pack)
        study = optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(plan.sampler, plan.grid),
                                  pruner=make_pruner(plan))
        key = (plan.base.dataset, plan.base.data_options, plan.base.image_size)
        if key not in data_cache:
            data_cache[key] = draws_of(plan.base)
        log.info("worker %d: joining study %s", os.getpid(), name)
        work(plan, study, data_cache[key], settings, progress=progress)
    return {"studies": len(names)}


def dgx_studies(storage) -> list[str]:
    """Search studies created by ``dgx sweep`` (they carry a plan); seeds studies follow their search."""
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
            if "plan" in s.user_attrs and not s.study_name.endswith(".seeds")]


def _worker_job(storage_url: str, studies: list[str], device: str, threads: int, pack: int = 1) -> dict[str, int]:
    """The function a submitit job runs (top level, so it pickles)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_worker(storage_url, studies, device, progress=False, threads=threads, pack=pack)


def launch(spec: WorkerSpec, storage_url: str, studies: list[str], device: str, runs_dir: Path) -> None:
    """Start ``spec.workers`` workers on ``studies`` and wait for all of them."""
    if spec.launcher == "process":
        _launch_processes(spec, storage_url, studies, device)
    else:
        _launch_submitit(spec, storage_url, studies, device, runs_dir)


def _launch_processes(spec: WorkerSpec, storage_url: str, studies: list[str], device: str) -> None:
    cores = os.cpu_count() or 1
    threads = spec.cpus_per_worker or max(1, cores // spec.workers)
    procs = []
    for i in range(spec.workers):
        env = dict(os.environ)
        if spec.gpus:
            env["CUDA_VISIBLE_DEVICES"] = spec.device_of(i)
        env["OMP_NUM_THREADS"] = str(threads)  # CPU workers share the cores instead of fighting over them
        cmd = [sys.executable, "-m", "dgx", "worker", "--storage", storage_url, "--device", device,
               "--threads", str(threads), "--pack", str(spec.pack), "--no-progress"]
        for name in studies:
            cmd += ["--study", name]
        procs.append(subprocess.Popen(cmd, env=env))
        log.info("started worker %d (pid %d)%s", i, procs[-1].pid, f" on GPU {spec.device_of(i)}" if spec.gpus else "")
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the terminal's Ctrl-C reached the workers too; let them record it
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed:
        raise DgxError(f"{len(failed)} of {spec.workers} workers exited with an error "
                       f"({', '.join(f'worker {i}: code {c}' for i, c in failed)}); see their output above, "
                       "then rerun the same command to resume")


def _launch_submitit(spec: WorkerSpec, storage_url: str, studies: list[str], device: str, runs_dir: Path) -> None:
    try:
        import submitit  # optional: only the slurm and local launchers need it
    except ImportError:
        raise DgxError("--launcher slurm needs submitit; pip install submitit") from None
    folder = Path(runs_dir) / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if spec.launcher == "local" else "slurm")
    cpus = spec.cpus_per_worker or (max(1, (os.cpu_count() or 1) // spec.workers) if spec.launcher == "local" else 8)
    params = {"timeout_min": spec.time_min, "cpus_per_task": cpus, "name": "dgx-worker",
              "gpus_per_node": 1 if (spec.gpus or spec.launcher == "slurm") else 0}
    if spec.launcher == "slurm" and spec.partition:
        params["slurm_partition"] = spec.partition
    executor.update_parameters(**params)
    jobs = [executor.submit(_worker_job, storage_url, studies, device, cpus, spec.pack) for _ in range(spec.workers)]
    log.info("submitted %d %s worker job(s): %s (logs under %s)", len(jobs), spec.launcher,
             ", ".join(j.job_id for j in jobs), folder.parent)
    errors = []
    for job in jobs:
        try:
            job.result()
        except Exception as exc:  # submitit wraps the worker's exception with its traceback
            errors.append(f"job {job.job_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}")
    if errors:
        raise DgxError(f"{len(errors)} worker job(s) failed ({'; '.join(errors)}); rerun the same command to resume")


__all__ = ["WorkerSpec", "LAUNCHERS", "launch", "parse_gpus", "run_worker", "dgx_studies"]
