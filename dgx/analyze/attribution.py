"""Where a trained model looks: input-gradient saliency mass by image region.

The tables say *whether* a method generalizes; this says *why*. For the
selected checkpoint of every run, saliency is |∂(z₁ − z₀)/∂x| (the logit
contrast's input gradient, summed over the three input channels) on the
source test split and on every target. Its mass is split over disjoint regions:

- ``abnormality``: the annotated lesion (images with an annotation);
- ``periphery``: the lung-periphery band outside the abnormality;
- ``decoy``: the box where the shortcut token is, or would be, drawn (synthetic
  data only: real images have no decoy ground truth, so the column is absent);
- ``elsewhere``: every other pixel (lung centre, body, background).

Shares are mass in the region over mass in the image, pooled over the images
of a domain, then averaged over a method's runs (seeds). The region's share of
the *area* is printed beside them: a model that looked everywhere alike would
score its area share. On data whose anatomy covers every image (decoy-cxr) all
images count; on real data only annotated positives do, since only they carry
cached masks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from dgx.data import GENERATED, load_dataset
from dgx.data.base import Bundle, Split, unconstrained
from dgx.data.released import for_profile
from dgx.errors import DgxError
from dgx.models import build_model, to_input
from dgx.plotting import pyplot, save_figure
from dgx.profiles import get_profile
from dgx.progress import make_progress
from dgx.report.labels import method_label
from dgx.report.load import open_existing_storage, report_method, study_names
from dgx.runs import BEST, run_dir

log = logging.getLogger("dgx")

REGIONS = ("abnormality", "periphery", "decoy", "elsewhere")


def saliency(model, images: np.ndarray, device: str = "cpu", batch_size: int = 64,
             normalization: str = "imagenet") -> np.ndarray:
    """float32 (N, H, W): |∂(z₁ − z₀)/∂x| summed over channels, eval mode, for uint8 images (N, H, W)
    normalized as the model was trained (``normalization``, its profile's)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))[:, None].to(device)
        x = to_input(batch, normalization=normalization)
        x.requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad((logits[:, 1] - logits[:, 0]).sum(), x)
        out.append(grad.abs().sum(1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.float32)


def regions(split: Split) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(images used, disjoint bool region masks over them), from the split's masks and anatomy."""
    abnormality = split.masks.get("abnormality")
    annotated = ~unconstrained(abnormality) if abnormality is not None else np.zeros(len(split), bool)
    full = "periphery" in split.anatomy  # ground truth for every image (synthetic data)
    use = np.ones(len(split), bool) if full else annotated
    idx = np.flatnonzero(use)
    shape = (len(idx), *split.images.shape[1:])
    abn = np.zeros(shape, bool)
    if abnormality is not None:
        abn[annotated[idx]] = np.asarray(abnormality[idx][annotated[idx]]) > 0
    if full:
        band = np.asarray(split.anatomy["periphery"][idx]) > 0
    elif "periphery" in split.masks:
        band = np.asarray(split.masks["periphery"][idx]) > 0
    else:
        band = np.zeros(shape, bool)
    out = {"abnormality": abn, "periphery": band & ~abn}
    if "decoy" in split.anatomy:
        out["decoy"] = (np.asarray(split.anatomy["decoy"][idx]) > 0) & ~abn & ~band
    taken = np.zeros(shape, bool)
    for m in out.values():
        taken |= m
    out["elsewhere"] = ~taken
    return idx, out


@dataclass
class Audit:
    """Saliency shares for one run: domain -> region -> share of mass; also area shares and mean maps."""

    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    area: dict[str, dict[str, float]] = field(default_factory=dict)
    mean_map: dict[str, np.ndarray] = field(default_factory=dict)  # per domain: mean per-image-normalized saliency
    n_images: dict[str, int] = field(default_factory=dict)


def audit_model(model, data: Bundle, device: str = "cpu", max_images: int | None = None,
                normalization: str = "imagenet") -> Audit:
    """Region shares of ``model``'s saliency on the source test split and every target of ``data``
    (normalized with ``normalization``, the profile's it trained under)."""
    result = Audit()
    for domain, split in {data.source: data.test, **data.targets}.items():
        idx, masks = regions(split)
        if max_images is not None and len(idx) > max_images:
            keep = np.linspace(0, len(idx) - 1, max_images).round().astype(int)  # deterministic, spread out
            idx, masks = idx[keep], {k: m[keep] for k, m in masks.items()}
        if len(idx) == 0:
            log.warning("no annotated images in %s: no attribution shares for it", domain)
            continue
        sal = saliency(model, np.asarray(split.images[idx]), device, normalization=normalization)
        total = float(sal.sum()) or 1.0
        result.shares[domain] = {k: float(sal[m].sum()) / total for k, m in masks.items()}
        result.area[domain] = {k: float(m.mean()) for k, m in masks.items()}
        per_image = sal / np.maximum(sal.sum(axis=(1, 2), keepdims=True), 1e-12)
        result.mean_map[domain] = per_image.mean(0)
        result.n_images[domain] = len(idx)
    return result


def mean_audits(audits: list[Audit]) -> Audit:
    """Average several runs' audits (seeds of one method) domain by domain."""
    out = Audit()
    for domain in dict.fromkeys(d for a in audits for d in a.shares):
        have = [a for a in audits if domain in a.shares]
        keys = list(have[0].shares[domain])
        out.shares[domain] = {k: float(np.mean([a.shares[domain][k] for a in have])) for k in keys}
        out.area[domain] = {k: float(np.mean([a.area[domain][k] for a in have])) for k in keys}
        out.mean_map[domain] = np.mean([a.mean_map[domain] for a in have], axis=0)
        out.n_images[domain] = have[0].n_images[domain]
    return out


def figure(groups: dict[str, Audit], mean_image: np.ndarray, domain: str, out: Path,
           outline: dict[str, np.ndarray] | None = None, columns: int = 4) -> Path:
    """Mean image, then one panel of mean saliency per method (shared colour scale), on one domain,
    wrapped into rows of ``columns`` panels."""
    plt = pyplot()
    names = [g for g in groups if domain in groups[g].mean_map]
    cols = min(columns, len(names) + 1)
    rows = -(-(len(names) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.8, 3.2 * rows + 0.4), constrained_layout=True,
                             squeeze=False)
    axes = axes.ravel()
    axes[0].imshow(mean_image, cmap="gray")
    axes[0].set_title(f"mean image\n{domain}", fontsize=9)
    top = max(float(np.quantile(groups[g].mean_map[domain], 0.995)) for g in names) if names else 1.0
    im = None
    for ax, name in zip(axes[1:], names):
        ax.imshow(mean_image, cmap="gray")
        im = ax.imshow(groups[name].mean_map[domain], cmap="magma", vmin=0, vmax=top, alpha=0.85)
        for region, colour in (("decoy", "#56B4E9"), ("periphery", "#F0E442")):
            if outline and region in outline:
                ax.contour(outline[region], levels=[0.5], colors=colour, linewidths=0.8)
        s = groups[name].shares[domain]
        ax.set_title(f"{name}\n" + ", ".join(f"{k} {100 * v:.0f}%" for k, v in s.items() if k != "elsewhere"),
                     fontsize=8)
    for ax in axes[len(names) + 1:]:
        ax.axis("off")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.6, label="mean saliency (share of the image's mass per pixel)")
    fig.suptitle("Where each method looks: |∂(z₁−z₀)/∂x| averaged over images; share of saliency mass per region "
                 "(yellow: mean periphery band, blue: mean decoy box)", fontsize=9)
    return save_figure(fig, out)


def ordered(groups: dict[str, Audit]) -> dict[str, Audit]:
    """ERM first, then the oracle, then the methods by name: the reading order of the table and figure."""
    def rank(label: str) -> tuple[int, str]:
        return (0 if label == "ERM" else 1 if label.startswith("Oracle") else 2, label)

    return {label: groups[label] for label in sorted(groups, key=rank)}


@dataclass
class RunRef:
    """One finished trial whose selected checkpoint the audit loads."""

    label: str  # table label of its method, e.g. "RRR (periphery)"
    config: dict  # the trial's training config (TrainConfig.to_dict())
    checkpoint: Path  # the run folder's best.pt
    domains: tuple[str, ...] = ()  # its source, then its targets (as the trial recorded them)


def study_runs(storage: str, study_prefix: tuple[str, ...] | None, phase: str | None, runs_dir: Path,
               check: Callable[[list[RunRef]], None] | None = None) -> list[RunRef]:
    """Every COMPLETE dgx trial of the chosen studies and phase whose checkpoint is on disk; ``check(refs)``
    runs before the warning about trials without one (a bad flag stays one error line)."""
    store, label = open_existing_storage(storage)
    refs, missing = [], 0
    for name in study_names(store, label, study_prefix):
        study = optuna.load_study(study_name=name, storage=store)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            attrs = trial.user_attrs
            if "config" not in attrs or "run_id" not in attrs or (phase and attrs.get("phase") != phase):
                continue
            checkpoint = run_dir(runs_dir, str(attrs["run_id"])) / BEST
            if not checkpoint.is_file():
                missing += 1
                continue
            refs.append(RunRef(method_label(report_method(attrs), str(attrs["mask"])), dict(attrs["config"]),
                               checkpoint, (str(attrs.get("source", "")), *map(str, attrs.get("targets", [])))))
    if refs and check is not None:
        check(refs)
    if missing:
        log.warning("%d trial(s) have no checkpoint under %s/runs (another machine's runs folder?); skipped",
                    missing, runs_dir)
    if not refs:
        raise DgxError(f"no finished trial with a checkpoint under {runs_dir}/runs in {label}"
                       f"{'' if phase is None else f' (phase {phase!r})'}; run `dgx sweep` first, or pass "
                       "--runs-dir where its runs folder is and --phase all for search trials")
    return refs


def audit_runs(refs: list[RunRef], data_dir: Path, device: str = "cpu",
               max_images: int | None = None, progress: bool = True) -> tuple[dict[str, Audit], dict[str, Bundle]]:
    """Per method label: the mean audit over its runs; plus the bundle each label was evaluated on."""
    bundles: dict[tuple, Bundle] = {}
    per_label: dict[str, list[Audit]] = {}
    data_of: dict[str, Bundle] = {}
    with make_progress() as bar:
        bar.disable = bar.disable or not progress
        task = bar.add_task("attribution audit", total=len(refs), status="")
        for ref in refs:
            cfg = ref.config
            profile = get_profile(str(cfg.get("profile", "paper")))  # its images decoded as it trained on them
            key = (cfg["dataset"], tuple(sorted(dict(cfg.get("data_options") or {}).items())), cfg.get("image_size"),
                   int(cfg.get("seed", 0)) if cfg["dataset"] in GENERATED else 0,  # generated data: the seed's draw
                   profile.name, *((int(cfg.get("seed", 0)), str(cfg.get("mask", "none"))) if profile.name != "paper"
                                   else (0, "none")))  # paper: for_profile changes nothing, one bundle serves all
            if key not in bundles:
                bundles[key] = for_profile(load_dataset(key[0], dict(key[1]), key[2], data_dir, key[3]), profile,
                                           key[5], key[6])
            model = build_model(cfg["model"], "none").to(device)
            model.load_state_dict(torch.load(ref.checkpoint, map_location=device, weights_only=True))
            per_label.setdefault(ref.label, []).append(audit_model(model, bundles[key], device, max_images,
                                                                   profile.normalization))
            data_of.setdefault(ref.label, bundles[key])
            bar.update(task, advance=1, status=ref.label)
    return ordered({label: mean_audits(audits) for label, audits in per_label.items()}), data_of


def audit_table(groups: dict[str, Audit], runs: dict[str, int]) -> str:
    """Markdown: one row per (method, domain), region shares of saliency mass and of area (%)."""
    regions_seen = [r for r in REGIONS if any(r in a.shares[d] for a in groups.values() for d in a.shares)]
    header = ["Method", "Domain", *[f"{r} % (area %)" for r in regions_seen], "images", "runs"]
    rows = []
    for label, audit in groups.items():
        for i, (domain, shares) in enumerate(audit.shares.items()):
            cells = [f"{100 * shares[r]:.1f} ({100 * audit.area[domain][r]:.1f})" if r in shares else "—"
                     for r in regions_seen]
            rows.append([label if i == 0 else "", domain, *cells, str(audit.n_images[domain]), str(runs[label])])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(vals: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
