"""From flags to plans: a validated TrainConfig from command-line values and a budget, and its data.

The command layer (``dgx/cli``) only parses options and calls these; workers,
benchmarks and tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from dgx.checks import check_device, check_flags, check_folder, check_number, check_sweep_flags, parse_options
from dgx.config import get_settings
from dgx.data import GENERATED, ORACLES, Draws, check_options, generated_masks, load_dataset
from dgx.data.base import NEGATIVE_MASKS, Bundle
from dgx.errors import DgxError, unknown_choice
from dgx.methods import BASELINE, method_class, uses_mask
from dgx.progress import say
from dgx.runs import OVERRIDDEN
from dgx.sweep.space import Budget, load_budget
from dgx.storage import shown_url

if TYPE_CHECKING:
    from dgx.train import TrainConfig, TrainResult

# torch, torchvision, scikit-learn and pandas (dgx.models, dgx.train, dgx.report) load inside the functions that
# need them, after every check that needs none of them: a bad budget or option fails at once.

log = logging.getLogger("dgx")


def parse_data_options(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    return parse_options(items)


def check_lam(lam: float | None) -> None:
    check_number("--lam", lam)


def check_steps(n_images: int, batch_size: int, data: str, what: str) -> None:
    """An epoch of ``n_images`` in batches of ``batch_size`` (the last partial one dropped) takes at least one step."""
    if n_images // batch_size < 1:
        raise DgxError(f"--batch-size {batch_size} is larger than the {n_images} training images of {data} ({what}): "
                       f"an epoch would take no optimizer step (a partial batch is dropped); pass --batch-size "
                       f"{max(2, n_images)} or less, or more training images (e.g. --data-opt n_train=...)")


def _epoch_images(n_train: int, n_val: int, profile_name: str) -> tuple[int, str]:
    """Training images per epoch, and how they are counted, for a source of ``n_train`` + ``n_val`` images."""
    import math

    from dgx.profiles import RELEASED_VAL_FRACTION, get_profile

    if get_profile(profile_name).source_split == "redraw":  # the released 80/20 split of train+val, per seed
        pool = n_train + n_val
        return pool - math.ceil(RELEASED_VAL_FRACTION * pool), f"80% of n_train + n_val = {pool}, --profile {profile_name}"
    return n_train, "n_train"


def resolve_config(method: str, mask: str | None, data: str, data_opt: list[str] | None, budget_name: str, *,
                   model: str | None, weights: str | None, image_size: int | None, epochs: int | None,
                   batch_size: int, actdiff_layers: str, lr: float | None = None, wd: float | None = None,
                   lam: float | None = None, seed: int = 0,
                   negative_masks: str | None = None, profile: str | None = None) -> tuple[TrainConfig, Budget]:
    """Validate the flags and merge them over the budget into one TrainConfig (no data is loaded)."""
    check_flags(method, mask, data, data_opt, lr=lr, wd=wd, lam=lam, seed=seed, actdiff_layers=actdiff_layers,
                negative_masks=negative_masks, profile=profile, model=model, weights=weights)
    if batch_size < 1:
        raise DgxError(f"--batch-size must be >= 1, got {batch_size}")
    budget = load_budget(budget_name)
    from dgx.profiles import get_profile

    profile_name = get_profile(profile or str(budget.train.get("profile", "paper"))).name
    negatives = negative_masks or str(budget.train.get("negative_masks", "ones"))
    if negatives not in NEGATIVE_MASKS:
        raise unknown_choice("--negative-masks value", negatives, NEGATIVE_MASKS)
    size = image_size if image_size is not None else budget.train.get("image_size")
    decoy = check_options(data, dict(parse_data_options(data_opt)), size)
    if decoy is not None:  # the train size is known before generating anything
        if uses_mask(method) and mask is not None and mask not in (*generated_masks(data), "none"):
            raise unknown_choice(f"mask for dataset {data}", mask, [*generated_masks(data), "none"])
        n_images, counted = _epoch_images(decoy.n_train, decoy.n_val, profile_name)
        check_steps(n_images, batch_size, data, counted)
    if not uses_mask(method):
        if mask not in (None, "none"):
            log.warning("%s uses no mask; ignoring --mask %s", method, mask)
        mask = "none"
    from dgx.models import resolve_weights
    from dgx.train import TrainConfig

    train = budget.train
    cfg = TrainConfig(
        method=method,
        mask=mask or "abnormality",
        dataset=data,
        data_options=parse_data_options(data_opt),
        image_size=image_size if image_size is not None else train.get("image_size"),
        model=model or train.get("model", "resnet50"),
        weights=resolve_weights(model or train.get("model", "resnet50"), weights or train.get("weights", "imagenet")),
        lr=lr if lr is not None else budget.defaults.get("lr", 1e-4),
        wd=wd if wd is not None else budget.defaults.get("wd", 0.0),
        lam=(lam if lam is not None else budget.default_lam(method)) if uses_mask(method) else 0.0,
        batch_size=batch_size,
        epochs=epochs if epochs is not None else int(train.get("epochs", 0)),
        seed=seed,
        actdiff_layers=actdiff_layers if "actdiff_layers" in method_class(method).config_fields() else "all",
        negative_masks=negatives if uses_mask(method) else "ones",  # without a mask there is nothing to fill
        profile=profile_name,
    )
    return cfg, budget


def load_data(cfg: TrainConfig) -> Bundle:
    """The data ``cfg`` trains on (on generated data: its seed's draw, see dgx.data.draw_options), checked."""
    settings = get_settings()
    bundle = load_dataset(cfg.dataset, dict(cfg.data_options), cfg.image_size, settings.data_dir, cfg.seed)
    if cfg.mask != "none" and cfg.mask not in bundle.train.masks:
        raise unknown_choice(f"mask for dataset {cfg.dataset}", cfg.mask, [*bundle.train.masks, "none"])
    if cfg.negative_masks != "ones" and cfg.mask != "none" and cfg.negative_masks not in bundle.train.anatomy:
        raise DgxError(f"--negative-masks {cfg.negative_masks} needs {cfg.negative_masks} masks for every training "
                       f"image, and dataset {cfg.dataset} has them only for annotated positives; "
                       "use --negative-masks ones (the paper's setting)")
    from dgx.profiles import get_profile

    if get_profile(cfg.profile).source_split != "redraw":  # a redrawn split is counted in resolve_config or training
        check_steps(len(bundle.train), cfg.batch_size, cfg.dataset, "its train split")
    return bundle


def check_model(cfg: TrainConfig, bundle: Bundle | None = None) -> None:
    """Build ``cfg``'s model (bad names, weights files) and pass it a blank image of the size it will train on,
    when that size is known without loading data (or from ``bundle``)."""
    from dgx.models import build_model, check_input_size

    model = build_model(cfg.model, cfg.weights)
    size = bundle.image_size if bundle is not None else cfg.image_size
    if size is None and bundle is None and cfg.dataset in GENERATED:
        size = check_options(cfg.dataset, dict(cfg.data_options)).image_size
    if size is not None:
        check_input_size(model, cfg.model, int(size))


def _model_then_data(cfg: TrainConfig, checked=None) -> Bundle:
    """The model checked and the data loaded, in the order that fails fastest: the model first where the
    data would be generated (decoy-cxr, decoy-mnist), the data first where it is only read (a prepared cache,
    which also gives the image size to check the model at). ``checked`` runs once both are checked and before
    anything is generated (the sweep opens its storage there)."""
    if cfg.dataset in GENERATED:
        check_model(cfg)
        if checked is not None:
            checked()
        return load_data(cfg)
    bundle = load_data(cfg)
    check_model(cfg, bundle)
    if checked is not None:
        checked()
    return bundle


def sweep(method: str, mask: str | None = None, data: str = "decoy-cxr", data_opt: list[str] | None = None,
          budget: str = "quick", trials: int | None = None, seeds: int | None = None, epochs: int | None = None,
          model: str | None = None, weights: str | None = None, image_size: int | None = None, batch_size: int = 16,
          actdiff_layers: str = "all", negative_masks: str | None = None, profile: str | None = None,
          storage: str | None = None, study: str | None = None, sampler: str = "grid", pruner: str = "none",
          baseline: bool = True, oracle: bool = True, device: str = "auto", workers: int | None = None,
          gpus: str | None = None, launcher: str = "process", partition: str = "", time_min: int = 24 * 60,
          trials_per_gpu: int = 1, pack: int = 1, select: str = "val", budget_note: str = "") -> str | None:
    """``dgx sweep``: search the grid, retrain the best over seeds (beside the ERM baseline and the oracle);
    the seed-averaged table, or None when the grid was only queued for workers (``workers=0``)."""
    settings = get_settings()
    check_sweep_flags(sampler=sampler, pruner=pruner, launcher=launcher, gpus=gpus, storage=storage, study=study,
                      trials=trials, seeds=seeds)
    from dgx.sweep.launch import WorkerSpec, parse_gpus
    from dgx.storage import check_storage

    url = storage or settings.default_storage()
    gpu_ids = parse_gpus(gpus)
    spec = WorkerSpec(workers=workers if workers is not None else max(1, len(gpu_ids) * trials_per_gpu), gpus=gpu_ids,
                      launcher=launcher, partition=partition, time_min=time_min, trials_per_gpu=trials_per_gpu,
                      pack=pack)
    spec.check(url)
    check_storage(url)
    check_device(device, here=spec.launcher == "process")  # SLURM jobs run on other machines
    cfg, plan_budget = resolve_config(method, mask, data, data_opt, budget, model=model, weights=weights,
                                        image_size=image_size, epochs=epochs, batch_size=batch_size,
                                        actdiff_layers=actdiff_layers, negative_masks=negative_masks,
                                        profile=profile)
    from dgx.report import report as build_report
    from dgx.sweep import SweepPlan, open_storage
    from dgx.sweep.study import check_pack, make_pruner, make_sampler

    name = study_name(cfg, plan_budget, prefix=study, select=select) if study is None else study
    plan = SweepPlan(base=cfg, budget=plan_budget, study=name, storage=url, trials=trials,
                     seeds=seeds or plan_budget.seeds, device=device, sampler=sampler, pruner=pruner, pack=pack,
                     select=select)
    make_sampler(sampler, plan.grid), make_pruner(plan), check_pack(plan)  # validate before any work
    plans = [plan]
    if baseline and cfg.method != BASELINE:
        erm = replace(cfg, method=BASELINE, mask="none", lam=0.0, actdiff_layers="all", negative_masks="ones")
        erm_plan = replace(plan, base=erm, study=study_name(erm, plan_budget, prefix=study))
        oracle_plan = erm_plan.oracle() if oracle else None
        plans += [erm_plan] + ([oracle_plan] if oracle_plan else [])
    started = time.perf_counter()
    bundle = _model_then_data(cfg, checked=lambda: open_storage(url))  # fail on model, data or storage first
    say(_header(name, plan_budget, cfg, bundle, plans, url, settings, spec, budget_note))
    names = execute(plans, spec, url, device, settings, bundle)
    if names is None:
        return None
    say(f"sweep finished in {time.perf_counter() - started:.0f} s; studies {', '.join(names)} in "
                  f"{shown_url(url)}")
    return build_report(url, study_prefix=tuple(names), phase="seeds")


def _header(name: str, plan_budget, cfg: TrainConfig, bundle: Bundle, plans: list, url: str, settings,
            spec, budget_note: str = "") -> str:
    """What a sweep is about to do, before it starts; ``budget_note``: why this budget, when none was named."""
    from dgx.report.load import ORACLE

    plan = plans[0]
    grid = " × ".join(f"{k}{v}" for k, v in plan.grid.items())
    lines = [
        f"[bold]dgx sweep[/] {name}: budget [cyan]{plan_budget.name}[/] ({plan_budget.description})",
        *([f"  budget {plan_budget.name} chosen: {budget_note}"] if budget_note else []),
        f"  model {cfg.model} (weights {cfg.weights}), {bundle.image_size} px, batch {cfg.batch_size}, "
        f"{cfg.num_epochs} epochs, data {cfg.dataset} ({_source_split(cfg, bundle)}, {len(bundle.targets)} targets)",
        f"  profile {cfg.profile}" + (" (the released code's training; README: Fidelity)" if cfg.profile != "paper"
                                     else " (--profile official trains as the released code did)"),
        f"  search {_count(plan.n_points, 'grid point')} of {grid}, then {_count(plan.seeds, 'seed')} of the best",
    ]
    changed = overrides(cfg, plan_budget)
    if changed and OVERRIDDEN.search(name):  # not with --study NAME
        lines.append("  overrides of budget " + plan_budget.name + ": " + ", ".join(f"{k}={v}" for k, v in changed.items())
                     + " (the study's -o suffix; `dgx report` reports it with --study " + name + ")")
    for extra in plans[1:]:
        what = ("oracle: ERM on the source with the shortcut decorrelated (" +
                ", ".join(f"{k}={v}" for k, v in ORACLES.get(cfg.dataset, {}).items()) + "; --no-oracle skips it)"
                if extra.variant == ORACLE else "baseline: ERM (--no-baseline skips it)")
        lines.append(f"  {what}, {_count(extra.n_points, 'grid point')} + {_count(plan.seeds, 'seed')}")
    if plan.pack > 1:
        lines.append(f"  packs of up to {plan.pack} grid points of one λ and seed per training (README: Packed trials)")
    lines.append(f"  storage {shown_url(url)}; W&B mode {settings.resolved_wandb_mode()}")
    if spec.parallel:
        where = f"GPUs {','.join(spec.gpus)}" if spec.gpus else "CPU"
        lines.append(f"  {spec.workers} worker(s) via {spec.launcher} ({where}); more can join with "
                     f"`dgx worker --storage {shown_url(url)}`")
    if plan_budget.name != "paper":
        lines.append("  the paper's full setting is one flag away: --budget paper")
    return "\n".join(lines)


def _source_split(cfg, bundle) -> str:
    from dgx.data.profile import pool_of
    from dgx.profiles import get_profile

    if get_profile(cfg.profile).source_split == "redraw":
        return f"pool of {len(pool_of(bundle))} redrawn 80/20 per seed"
    return f"{len(bundle.train)} train / {len(bundle.val)} val"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def draws_of(cfg: TrainConfig, first: Bundle | None = None) -> Draws:
    """Every seed's data for ``cfg``'s dataset and options; ``first``: the bundle of ``cfg.seed``, already loaded."""
    return Draws(cfg.dataset, dict(cfg.data_options), cfg.image_size, get_settings().data_dir,
                 {cfg.seed: first} if first is not None else None)


def execute(plans, spec, url: str, device: str, settings, bundle) -> list[str] | None:
    """Run ``plans`` in this process or on ``spec``'s workers; the study names, or None when only queued.

    ``bundle`` (the first plan's data at its seed) serves the plans on the same data options; a plan on
    other options (the oracle) loads its own, and every seed loads its draw (generated data).
    """
    from dgx.sweep import open_storage, run_sweep
    from dgx.sweep.launch import launch
    from dgx.sweep.study import prepare_sweep

    names: list[str] = []
    if spec.parallel:
        storage_obj = open_storage(url)
        for p in plans:
            prepare_sweep(p, storage_obj)  # enqueue every grid point once, before any worker starts
        if spec.workers == 0:
            studies = " ".join(f"--study {p.study}" for p in plans)
            say(f"queued; start workers with `dgx worker --storage {shown_url(url)} {studies}`, "
                          f"then `dgx report --storage {shown_url(url)}`")
            return None
        launch(spec, url, [p.study for p in plans], device, settings.runs_dir)
        for p in plans:
            names += [p.study, f"{p.study}.seeds"]
    else:
        first = plans[0].base
        for p in plans:
            same = (p.base.dataset, p.base.data_options, p.base.seed) == (first.dataset, first.data_options, first.seed)
            names += run_sweep(p, draws_of(p.base, bundle if same else None), settings)
    return names


# A study whose fixed settings differ from its budget's (a flag or data option overrode them) carries a
# short hash of those differences (runs.OVERRIDDEN): `dgx sweep rrr --mask periphery --epochs 1` and the plain
# command get different studies, and `dgx report` without --study reports the plain ones.
_NAMED = ("method", "mask", "dataset", "profile", "negative_masks", "lr", "wd", "lam", "seed")  # in the name or varying


def overrides(cfg, budget: Budget) -> dict:
    """The fixed settings of ``cfg`` that differ from what ``budget`` gives its method, mask and data alone."""
    from dgx.models import resolve_weights

    train = budget.train
    model = train.get("model", "resnet50")
    default = replace(cfg, data_options=(), image_size=train.get("image_size"), model=model,
                      weights=resolve_weights(model, train.get("weights", "imagenet")), batch_size=16,
                      epochs=int(train.get("epochs", 0)), actdiff_layers="all")
    mine, base = cfg.to_dict(), default.to_dict()
    return {k: mine[k] for k in sorted(mine) if k not in _NAMED and mine[k] != base[k]}


def study_name(cfg, budget: Budget, prefix: str | None = None, select: str = "val") -> str:
    """METHOD-MASK-DATA-BUDGET[-PROFILE][-oHASH][-select-RULE], or PREFIX-METHOD for a baseline next to a named study.

    ``-oHASH``: six hex digits of the settings a flag changed from the budget's (:func:`overrides`).
    A selection rule other than the paper's names its own study (its seeds phase may retrain another
    point; the search's trainings are shared through their run folders). A method without a mask or λ
    selects alike under every rule, so its study is shared too."""
    if prefix:
        return f"{prefix}-{cfg.method}"
    negatives = "" if cfg.negative_masks == "ones" else f"-neg{cfg.negative_masks}"
    profile = "" if cfg.profile == "paper" else f"-{cfg.profile}"
    changed = overrides(cfg, budget)
    digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:6]
    tag = f"-o{digest}" if changed else ""
    rule = f"-select-{select}" if select != "val" and uses_mask(cfg.method) else ""
    return f"{cfg.method}-{cfg.mask}{negatives}-{cfg.dataset}-{budget.name}{profile}{tag}{rule}"


def train_one(method: str, mask: str | None = None, data: str = "decoy-cxr", data_opt: list[str] | None = None,
              budget: str = "quick", lr: float | None = None, wd: float | None = None, lam: float | None = None,
              epochs: int | None = None, seed: int = 0, model: str | None = None, weights: str | None = None,
              image_size: int | None = None, batch_size: int = 16, actdiff_layers: str = "all",
              negative_masks: str | None = None, profile: str | None = None, device: str = "auto",
              runs_dir: Path | None = None) -> tuple[TrainConfig, Bundle, TrainResult]:
    """``dgx train``: one training run from flags and a budget (resumed, or returned at once when done)."""
    cfg, _ = resolve_config(method, mask, data, data_opt, budget, model=model, weights=weights,
                            image_size=image_size, epochs=epochs, batch_size=batch_size,
                            actdiff_layers=actdiff_layers, lr=lr, wd=wd, lam=lam, seed=seed,
                            negative_masks=negative_masks, profile=profile)
    if runs_dir is not None:
        check_folder(runs_dir, "--runs-dir")
    check_device(device)
    from dgx.runs import run_dir
    from dgx.train import train

    bundle = _model_then_data(cfg)
    folder = run_dir(runs_dir or get_settings().runs_dir, cfg.run_id(bundle.fingerprint))
    say(f"[bold]dgx train[/] {cfg.method} mask={cfg.mask} profile={cfg.profile} data={cfg.dataset} "
                  f"model={cfg.model} weights={cfg.weights} size={bundle.image_size} epochs={cfg.num_epochs} "
                  f"lr={cfg.lr:g} wd={cfg.wd:g} λ={cfg.lam:g} seed={cfg.seed} → {folder}")
    return cfg, bundle, train(cfg, bundle, folder, device=device)


__all__ = ["parse_data_options", "check_lam", "check_steps", "resolve_config", "load_data", "draws_of", "check_model",
           "sweep", "execute", "study_name", "train_one"]
