"""From a request to what runs: its TrainConfig (the flags merged over a budget), its data and model,
checked in the order that fails fastest, and ``dgx train``'s one training (:func:`train_one`).

Commands (dgx/cli), workers, benchmarks and tests all come through here, so a script gets the errors
a command prints.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable

from dgx.config import get_settings
from dgx.data import GENERATED, Draws, check_options, generated_masks, load_dataset
from dgx.data.base import NEGATIVE_MASKS, Bundle
from dgx.errors import DgxError, unknown_choice
from dgx.methods import method_class, uses_mask
from dgx.profiles import RELEASED_VAL_FRACTION, Profile, get_profile
from dgx.progress import say
from dgx.runs import run_dir
from dgx.spec import TrainConfig, TrainRequest
from dgx.space import Budget, load_budget

log = logging.getLogger("dgx")


def check_steps(n_images: int, batch_size: int, data: str, what: str, profile: Profile) -> None:
    """An epoch of ``n_images`` in batches of ``batch_size`` takes at least one step (the last partial batch
    dropped, unless the profile keeps it as the released code did)."""
    if profile.last_batch == "keep" and n_images >= 1:
        return
    if n_images // batch_size < 1:
        raise DgxError(f"--batch-size {batch_size} is larger than the {n_images} training images of {data} ({what}): "
                       f"an epoch would take no optimizer step (a partial batch is dropped); pass --batch-size "
                       f"{max(2, n_images)} or less, or more training images (e.g. --data-opt n_train=...)")


def _epoch_images(n_train: int, n_val: int, profile_name: str) -> tuple[int, str]:
    """Training images per epoch, and how they are counted, for a source of ``n_train`` + ``n_val`` images."""
    if get_profile(profile_name).source_split == "redraw":  # the released 80/20 split of train+val, per seed
        pool = n_train + n_val
        return pool - math.ceil(RELEASED_VAL_FRACTION * pool), f"80% of n_train + n_val = {pool}, --profile {profile_name}"
    return n_train, "n_train"


def resolve_config(req: TrainRequest) -> tuple[TrainConfig, Budget]:
    """``req`` merged over its budget into one TrainConfig (no data is loaded); ``req`` is checked
    (:meth:`TrainRequest.check`)."""
    budget = load_budget(req.budget)
    train = budget.train
    method = req.method
    profile_name = get_profile(req.profile or str(train.get("profile", "paper"))).name
    negatives = req.negative_masks or str(train.get("negative_masks", "ones"))
    if negatives not in NEGATIVE_MASKS:
        raise unknown_choice("--negative-masks value", negatives, NEGATIVE_MASKS)
    size = req.image_size if req.image_size is not None else train.get("image_size")
    decoy = check_options(req.data, dict(req.data_options()), size)
    mask = req.mask
    if decoy is not None:  # the train size is known before generating anything
        if uses_mask(method) and mask is not None and mask not in (*generated_masks(req.data), "none"):
            raise unknown_choice(f"mask for dataset {req.data}", mask, [*generated_masks(req.data), "none"])
        n_images, counted = _epoch_images(decoy.n_train, decoy.n_val, profile_name)
        check_steps(n_images, req.batch_size, req.data, counted, get_profile(profile_name))
    if not uses_mask(method):
        if mask not in (None, "none"):
            log.warning("%s uses no mask; ignoring --mask %s", method, mask)
        mask = "none"
    from dgx.models import resolve_weights  # torchvision: after every check that needs none

    model = req.model or train.get("model", "resnet50")
    options = method_class(method).parse_options(req.method_options())
    cfg = TrainConfig(
        method=method,
        mask=mask or "abnormality",
        dataset=req.data,
        data_options=req.data_options(),
        image_size=size,
        model=model,
        weights=resolve_weights(model, req.weights or train.get("weights", "imagenet")),
        lr=req.lr if req.lr is not None else budget.defaults.get("lr", 1e-4),
        wd=req.wd if req.wd is not None else budget.defaults.get("wd", 0.0),
        lam=(req.lam if req.lam is not None else budget.default_lam(method)) if uses_mask(method) else 0.0,
        batch_size=req.batch_size,
        epochs=req.epochs if req.epochs is not None else int(train.get("epochs", 0)),
        seed=req.seed,
        method_options=tuple(sorted((k, str(v)) for k, v in dataclasses.asdict(options).items())),
        negative_masks=negatives if uses_mask(method) else "ones",  # without a mask there is nothing to fill
        profile=profile_name,
    )
    return cfg, budget


def load_data(cfg: TrainConfig) -> Bundle:
    """The data ``cfg`` trains on (on generated data: its seed's draw, see dgx.data.draw_options), checked."""
    bundle = load_dataset(cfg.dataset, dict(cfg.data_options), cfg.image_size, get_settings().data_dir, cfg.seed)
    if cfg.mask != "none" and cfg.mask not in bundle.train.masks:
        raise unknown_choice(f"mask for dataset {cfg.dataset}", cfg.mask, [*bundle.train.masks, "none"])
    if cfg.negative_masks != "ones" and cfg.mask != "none" and cfg.negative_masks not in bundle.train.anatomy:
        raise DgxError(f"--negative-masks {cfg.negative_masks} needs {cfg.negative_masks} masks for every training "
                       f"image, and dataset {cfg.dataset} has them only for annotated positives; "
                       "use --negative-masks ones (the paper's setting)")
    profile = get_profile(cfg.profile)
    if profile.source_split != "redraw":  # a redrawn split is counted in resolve_config or training
        check_steps(len(bundle.train), cfg.batch_size, cfg.dataset, "its train split", profile)
    return bundle


def draws_of(cfg: TrainConfig, first: Bundle | None = None) -> Draws:
    """Every seed's data for ``cfg``'s dataset and options; ``first``: the bundle of ``cfg.seed``, already loaded."""
    return Draws(cfg.dataset, dict(cfg.data_options), cfg.image_size, get_settings().data_dir,
                 {cfg.seed: first} if first is not None else None)


def check_model(cfg: TrainConfig, bundle: Bundle | None = None) -> None:
    """Build ``cfg``'s model (bad names, weights files) and pass it a blank image of the size it will train on,
    when that size is known without loading data (or from ``bundle``)."""
    from dgx.models import build_model, check_input_size  # torch: after the checks that need none

    model = build_model(cfg.model, cfg.weights)
    size = bundle.image_size if bundle is not None else cfg.image_size
    if size is None and bundle is None and cfg.dataset in GENERATED:
        size = check_options(cfg.dataset, dict(cfg.data_options)).image_size
    if size is not None:
        check_input_size(model, cfg.model, int(size))


def model_then_data(cfg: TrainConfig, checked: Callable[[], object] | None = None) -> Bundle:
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


def train_one(req: TrainRequest):
    """``dgx train``: one training of a checked request (resumed, or returned at once when done):
    (TrainConfig, Bundle, TrainResult)."""
    from dgx.train import train  # torch

    cfg, _ = resolve_config(req)
    bundle = model_then_data(cfg)
    folder = run_dir(req.runs_dir or get_settings().runs_dir, cfg.run_id(bundle.fingerprint))
    say(f"[bold]dgx train[/] {cfg.method} mask={cfg.mask} profile={cfg.profile} data={cfg.dataset} "
        f"model={cfg.model} weights={cfg.weights} size={bundle.image_size} epochs={cfg.num_epochs} "
        f"lr={cfg.lr:g} wd={cfg.wd:g} λ={cfg.lam:g} seed={cfg.seed} → {folder}")
    return cfg, bundle, train(cfg, bundle, folder, device=req.device)


__all__ = ["check_steps", "resolve_config", "load_data", "draws_of", "check_model", "model_then_data", "train_one"]
