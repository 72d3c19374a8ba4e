"""``dgx reproduce``: run a paper experiment from its spec in ``sweeps/paper/`` and print its table."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dgx.cli import common as c


def reproduce(
    name: Annotated[str, typer.Argument(help="table1 | table2 | table3 | table5 | all (the paper's four) | decoy-masks (every method and mask on decoy-cxr) | decoy-mnist (the literature's known answer): the specs in sweeps/paper/.", show_default=False)],
    data: Annotated[Optional[str], typer.Option("--data", help="Dataset instead of the spec's (e.g. decoy-cxr for a synthetic rehearsal).")] = None,
    data_opt: c.DataOptsOpt = None,
    budget: Annotated[Optional[str], typer.Option("--budget", help="Budget instead of the spec's (paper).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Cap on grid points per study. Default: the whole grid.")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", min=1, help="Seeds instead of the spec's (10, or 3 for CXR-P Full).")] = None,
    epochs: c.EpochsOpt = None,
    model: c.ModelOpt = None,
    weights: c.WeightsOpt = None,
    image_size: c.ImageSizeOpt = None,
    profile: Annotated[Optional[str], typer.Option("--profile", help="paper | official: instead of the spec's `profile` (paper). README: Fidelity.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL. Default: DGX_STORAGE or sqlite:///runs/dgx.db.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the studies and trials it would run, with their estimated GPU cost, and stop.")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Workers sharing each study (see dgx sweep).")] = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids, one worker each (see dgx sweep).")] = None,
    device: c.DeviceOpt = "auto",
    pruner: Annotated[str, typer.Option("--pruner", help="none (the default: the full grid) | median | hyperband | asha. Measured on decoy-cxr replicas, every pruner changed the pick by up to 7.5 AUROC points (bench/prune_replay.py), so the full grid stays the default. The seeds phase is never pruned.")] = "none",
    throughput: Annotated[Optional[str], typer.Option("--throughput", help="Measured throughput table (JSON) behind the GPU-hour estimate, as bench/gpu_check.py --table writes it. Default: sweeps/throughput/h200.json (a newer bench/results/throughput.json is used only when passed here).")] = None,
    pack: Annotated[int, typer.Option("--pack", min=1, help="Train K search grid points that differ only in LR and WD as one packed network (dgx/pack.py). Default: 1, one trial at a time. The estimate's packed variants use the best measured K up to this.")] = 1,
    select: Annotated[Optional[str], typer.Option("--select", help="Grid-point rule instead of the spec's `select` (val, the paper's, unless the spec says otherwise): val | swapped | shuffled | lam-ci. README: Model selection.")] = None,
) -> None:
    """Run the studies behind one of the paper's tables (resuming existing ones), then print the table."""
    from dgx.spec import ReproduceRequest  # the library loads when the command runs (dgx --help stays fast)

    req = ReproduceRequest(name=name, data=data, data_opts=tuple(data_opt or ()), budget=budget, trials=trials,
                           seeds=seeds, epochs=epochs, model=model, weights=weights, image_size=image_size,
                           profile=profile, storage=storage, dry_run=dry_run, workers=workers, gpus=gpus,
                           device=device, pruner=pruner, throughput=throughput, pack=pack, select=select)
    req.check()  # what the flags' text alone can show, before the slow imports and any work
    from dgx.sweep.paper import reproduce as run_reproduce  # torch, Optuna

    run_reproduce(req, echo=typer.echo)
