"""decoy-cxr: the embedded synthetic pneumothorax benchmark.

A chest X-ray caricature on real lung outlines (:mod:`dgx.data.lungs`) that
reproduces the paper's setting in miniature:

* label: a lucent, texture-free pocket at one lung's apex or lateral edge with
  a bright pleural line at its inner border; the ``abnormality`` mask is it;
* context: a subtle lucent band along the whole ipsilateral lung edge, inside
  the ``periphery`` mask but outside the abnormality mask, so attributing only
  to the tight mask throws real signal away (the paper's thesis);
* decoy: a bright hospital token in the top-right corner, outside the lungs,
  that co-occurs with the label in the source and is independent of it in the
  targets;
* targets with the paper's shifts: hospital (acquisition), age (lung shape and
  texture, rib density), or both.

Everything is a pure function of :class:`DecoyConfig`; :func:`load_decoy` caches
the result on disk under :func:`fingerprint`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from dgx.data.base import Bundle, Split, cached_bundle
from dgx.data.groups import decoy_groups
from dgx.data.lungs import load_lung_atlas, place_lungs, pneumothorax_region
from dgx.errors import DgxError
from dgx.masks import all_ones_for_negatives, periphery_masks, scaled_mask

log = logging.getLogger(__name__)

NAME = "decoy-cxr"
SOURCE = "cxr-p-synth"
TARGETS = ("mimic-cxr-synth", "chexpert-synth", "chexpert-age-synth", "chestx-ray8-synth")
# Child seed streams, in this fixed order, so resizing one part never reseeds another.
PARTS = ("train", "val", "test") + TARGETS
MASKS = ("abnormality", "scaled", "periphery")  # the mask kinds every image has (checked before generating)
# Bump whenever the pixels for an unchanged config change, so stale caches die.
GENERATOR_VERSION = 2  # 2: anatomy arrays (lungs, periphery band, decoy box) for every image


@dataclass(frozen=True)
class DecoyConfig:
    """Everything that determines the generated benchmark (and its fingerprint)."""

    seed: int = 1000  # root draw (sweeps/protocol.yaml: the first evaluation draw); each split/domain a child stream
    image_size: int = 48  # small default so the whole study trains on a CPU
    n_train: int = 1536  # source training images (calibrated on ERM and the oracle: sweeps/protocol.yaml)
    n_val: int = 192  # source validation images for model selection
    n_test: int = 384  # source held-out test images (the in-distribution score)
    n_target: int = 384  # images per target domain
    pos_frac: float = 0.3  # exact positive fraction in every split (paper: 22%)
    decoy_strength: float = 1.0  # source: P(decoy|pos) = s and P(decoy|neg) = 1 - s (1.0: fully confounded)
    target_decoy_rate: float = 0.5  # targets: P(decoy) regardless of label (decorrelated)
    periphery_width: float = 0.15  # periphery band width, fraction of each lung's equivalent diameter
    scaled_grid: int = 6  # grid cells per side for the scaled-abnormality mask (8 px cells at 48 px)
    lesion_depth: float = 0.12  # max pneumothorax depth, fraction of lung diameter (<= periphery_width)
    lesion_contrast: float = 0.1  # darkening of the pneumothorax pocket (air is lucent)
    pleural_contrast: float = 0.1  # brightness of the visceral pleural line at the pocket's edge
    context_width: float = 0.07  # width of the ipsilateral context band (<= periphery_width)
    context_strength: float = 0.5  # fraction of vessel texture lost in the band, and its darkening
    decoy_contrast: float = 0.1  # token brightness (= the lesion's); 0 renders identical images without the decoy
    texture_amp: float = 0.09  # vessel-marking amplitude, the clutter the lesion hides in
    noise: float = 0.02  # source sensor noise (std, intensity units)
    shift_scale: float = 1.0  # severity of all domain shifts; 0 leaves only the decoy decorrelation

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.seed < 2**32, "seed must be in 0..2**32-1"),
            (self.image_size >= 24, "image_size must be >= 24"),
            (min(self.n_train, self.n_val, self.n_test, self.n_target) >= 2, "every split needs >= 2 images"),
            (0 < self.pos_frac < 1, "pos_frac must be in (0, 1)"),
            (0 <= self.decoy_strength <= 1, "decoy_strength must be in [0, 1]"),
            (0 <= self.target_decoy_rate <= 1, "target_decoy_rate must be in [0, 1]"),
            (0 < self.periphery_width <= 0.5, "periphery_width must be in (0, 0.5]"),
            (1 <= self.scaled_grid <= self.image_size, "scaled_grid must be in [1, image_size]"),
            (0 < self.lesion_depth <= self.periphery_width, "lesion_depth must be in (0, periphery_width]"),
            (0 <= self.context_width <= self.periphery_width, "context_width must be in [0, periphery_width]"),
            (0 <= self.context_strength <= 1, "context_strength must be in [0, 1]"),
            (self.noise >= 0 and self.texture_amp >= 0 and self.shift_scale >= 0, "noise/texture/shift >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DgxError(f"invalid decoy-cxr config: {msg}; fix that --data-opt (or --image-size)")


# Domain shifts as (field: target value); the source uses SOURCE_LOOK throughout.
SOURCE_LOOK = dict(gamma=1.0, gain=1.0, offset=0.0, noise=1.0, lung_w=1.0, lung_h=1.0, lung_y=0.0,
                   tex_scale=1.0, tex_amp=1.0, rib=1.0, rib_curve=1.0, bullae=0.0, emphysema=0.0)  # fmt: skip
_HOSPITAL_B = dict(gamma=1.1, gain=0.88, noise=2.0)  # MIMIC: portable films, flat and noisy
_HOSPITAL_C = dict(gamma=1.2, gain=0.9, offset=0.05, noise=1.5)  # CheXpert: flat, lifted blacks, grainier
# Older lungs: hyperinflated, coarser markings, osteopenic flatter ribs, and
# subpleural (paraseptal) bullae and emphysematous lucent rims, which mimic the
# pneumothorax pocket and its context band in patients without one.
_AGED = dict(lung_w=0.93, lung_h=1.1, lung_y=0.02, tex_scale=1.5, tex_amp=1.3, rib=0.55, rib_curve=0.6, bullae=2.0,
             emphysema=0.6)  # fmt: skip
DOMAIN_SHIFTS = {
    SOURCE: {},
    "mimic-cxr-synth": _HOSPITAL_B,
    "chexpert-synth": _HOSPITAL_C,
    "chexpert-age-synth": {**_HOSPITAL_C, **_AGED},
    "chestx-ray8-synth": _AGED,  # same hospital as the source, older patients
}


@dataclass
class Rendered:
    """A generated split plus the ground truth tests and figures need."""

    split: Split
    lungs: np.ndarray  # bool (N, H, W), both lungs
    decoy: np.ndarray  # bool (N,), token present
    decoy_mask: np.ndarray  # bool (N, H, W), token pixels (empty where absent)
    context: np.ndarray  # bool (N, H, W), the ipsilateral context band (positives only)


def _look(domain: str, shift_scale: float) -> dict[str, float]:
    shift = DOMAIN_SHIFTS[domain]
    return {k: v + shift_scale * (shift.get(k, v) - v) for k, v in SOURCE_LOOK.items()}


def _balanced(rng: np.random.Generator, n: int, frac: float) -> np.ndarray:
    """Exactly round(frac * n) ones in random order (exact counts keep splits comparable)."""
    out = np.zeros(n, dtype=bool)
    out[: int(round(frac * n))] = True
    return rng.permutation(out)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * z)  # no exp overflow in float32


def _thorax(rng: np.random.Generator, lungs: np.ndarray, look: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Soft tissue (body, spine, heart) and ribs, each (N, H, W) float32.

    Coordinates are fractions of the image relative to the lungs' centroid, so
    the anatomy follows the lungs and looks the same at every image size.
    """
    n, s = lungs.shape[0], lungs.shape[-1]
    g = (np.arange(s, dtype=np.float32) + 0.5) / s
    area = np.maximum(lungs.sum((1, 2)), 1)
    cx = (lungs.sum(1) * g).sum(1) / area
    cy = (lungs.sum(2) * g).sum(1) / area
    x = g[None, None, :] - cx[:, None, None].astype(np.float32)
    y = g[None, :, None] - cy[:, None, None].astype(np.float32)
    body = _sigmoid((1 - (x / 0.47) ** 4 - ((y - 0.12) / 0.62) ** 4) * 12)  # soft superellipse
    spine = np.exp(-((x / 0.05) ** 2)) * (y > -0.3)
    heart = _sigmoid((1 - ((x - 0.06) / 0.2) ** 2 - ((y - 0.17) / 0.14) ** 2) * 6)
    tissue = 0.04 + body * (0.36 + 0.1 * spine + 0.2 * heart)
    # Posterior ribs: bright arcs that fall away laterally, repeating down the chest.
    spacing = rng.uniform(0.085, 0.1, (n, 1, 1)).astype(np.float32)
    curve = (rng.uniform(1.3, 1.8, (n, 1, 1)) * look["rib_curve"]).astype(np.float32)
    phase = (y - curve * x**2) / spacing - rng.uniform(0, 1, (n, 1, 1)).astype(np.float32)
    thorax = np.exp(-((x / 0.4) ** 4 + ((y + 0.02) / 0.36) ** 4))
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6 * thorax * np.float32(0.1 * look["rib"])
    return tissue, ribs


def _smooth_noise(rng: np.random.Generator, n: int, size: int, sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal((n, size, size), dtype=np.float32), (0, sigma, sigma))
    return noise / noise.std(axis=(1, 2), keepdims=True)


def render(cfg: DecoyConfig, part: str, atlas_cache: Path | None = None) -> Rendered:
    """Generate one source split ("train", "val", "test") or one target domain.

    ``atlas_cache`` is only a speed-up (a disk cache for the decoded lung masks). Every step below draws from
    the part's one random stream in a fixed order, so the images are a pure function of ``cfg`` and ``part``.
    """
    if part not in PARTS:
        raise DgxError(f"unknown decoy-cxr part {part!r}; choose from: {', '.join(PARTS)}")
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(len(PARTS))[PARTS.index(part)])
    is_target = part in TARGETS
    n = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}.get(part, cfg.n_target)
    look = _look(part if is_target else SOURCE, cfg.shift_scale)
    px = cfg.image_size / 48.0  # pixel lengths are tuned at 48 px

    labels, decoy = _labels_and_decoys(rng, cfg, n, is_target)
    lungs = _lungs(rng, look, n, cfg.image_size, atlas_cache)
    tissue, ribs = _thorax(rng, lungs, look)
    lung_value, pockets, context, aged = _lung_contents(rng, cfg, look, lungs, labels, px)
    img = np.where(lungs, lung_value + 0.5 * ribs, tissue + ribs)
    box = _decoy_box(rng, lungs)
    token = box & decoy[:, None, None]
    img += np.float32(cfg.decoy_contrast) * token
    images = _acquire(rng, img, look, cfg.noise, px)

    pos = np.flatnonzero(labels)
    periphery = periphery_masks(lungs, cfg.periphery_width)  # every image (negatives may be constrained to it)
    scaled = np.ones_like(lungs)
    scaled[pos] = scaled_mask(pockets[pos], cfg.scaled_grid) if len(pos) else scaled[pos]
    y_int = labels.astype(np.int64)
    kinds = {"abnormality": pockets, "scaled": scaled, "periphery": periphery | pockets}  # = MASKS
    masks = {k: all_ones_for_negatives(m, y_int) for k, m in kinds.items()}
    anatomy = {"lungs": lungs, "periphery": periphery, "decoy": box}
    split = Split(images, y_int, masks, {k: v.astype(np.uint8) for k, v in anatomy.items()},
                  decoy_groups(decoy, aged))
    return Rendered(split, lungs, decoy, token, context)


def _labels_and_decoys(rng: np.random.Generator, cfg: DecoyConfig, n: int,
                       is_target: bool) -> tuple[np.ndarray, np.ndarray]:
    """bool (N,) labels and bool (N,) decoy presence: with the label in the source, independent in the targets."""
    labels = _balanced(rng, n, cfg.pos_frac)
    decoy = np.zeros(n, dtype=bool)
    for cls in (True, False):  # exact counts per class make the correlation exact too
        rate = cfg.target_decoy_rate if is_target else (cfg.decoy_strength if cls else 1 - cfg.decoy_strength)
        decoy[labels == cls] = _balanced(rng, int((labels == cls).sum()), rate)
    return labels, decoy


def _lungs(rng: np.random.Generator, look: dict[str, float], n: int, s: int, atlas_cache: Path | None) -> np.ndarray:
    """bool (N, S, S): an atlas lung pair per image, placed and sized with the domain's look."""
    atlas = load_lung_atlas(s, atlas_cache)
    index = rng.integers(0, len(atlas), n)
    center = np.stack([0.5 + rng.normal(0, 0.015, n), 0.54 + look["lung_y"] + rng.normal(0, 0.015, n)], 1)
    extent = np.stack([look["lung_w"] * rng.uniform(0.64, 0.74, n), look["lung_h"] * rng.uniform(0.53, 0.61, n)], 1)
    return place_lungs(atlas, index, center, extent, rng.normal(0, 0.05, n), s)


def _lung_contents(rng: np.random.Generator, cfg: DecoyConfig, look: dict[str, float], lungs: np.ndarray,
                   labels: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What fills the lungs: (intensity inside the lungs (N, S, S), pneumothorax pockets with their pleural line,
    context bands, and bool (N,) which images have aged lucencies: emphysematous rims or bullae)."""
    n, s = lungs.shape[0], lungs.shape[-1]
    # Vessel markings: smoothed noise, kept positive (vessels are brighter than air).
    texture = np.maximum(_smooth_noise(rng, n, s, 0.7 * px * look["tex_scale"]), 0)
    texture *= np.float32(cfg.texture_amp * look["tex_amp"])
    lung_value = 0.17 + texture
    emphysema = rng.random(n) < look["emphysema"]
    for i in np.flatnonzero(emphysema):  # aged domains only, any label
        band = pneumothorax_region(rng, lungs[i], cfg.lesion_depth, cfg.context_width)[1]
        lung_value[i][band] -= cfg.context_strength * rng.uniform(0.7, 1.2) * (texture[i][band] + 0.03)
    pockets, context = np.zeros_like(lungs), np.zeros_like(lungs)
    for i in np.flatnonzero(labels):
        pocket, band = pneumothorax_region(rng, lungs[i], cfg.lesion_depth, cfg.context_width)
        line = ndimage.binary_dilation(pocket) & lungs[i] & ~pocket  # the visceral pleura, one pixel thick
        pockets[i], context[i] = pocket | line, band & ~pocket & ~line
        lung_value[i][band] -= cfg.context_strength * (texture[i][band] + 0.03)
        lung_value[i][pocket] = 0.17 - cfg.lesion_contrast  # no lung, no markings: just air
        lung_value[i][line] += cfg.pleural_contrast
    bullae = np.minimum(rng.poisson(look["bullae"], n), 4)  # aged domains only, any label
    for i in np.flatnonzero(bullae):
        rim = np.argwhere(lungs[i] & ~ndimage.binary_erosion(lungs[i], iterations=max(1, round(2 * px))))
        for _ in range(bullae[i]):
            cy, cx = rim[rng.integers(len(rim))]
            r = rng.uniform(0.025, 0.05) * s
            bulla = lungs[i] & ((np.arange(s)[:, None] - cy) ** 2 + (np.arange(s)[None, :] - cx) ** 2 <= r * r)
            wall = ndimage.binary_dilation(bulla) & lungs[i] & ~bulla  # thin, like a pleural line
            lung_value[i][bulla] = 0.17 - 0.8 * cfg.lesion_contrast
            lung_value[i][wall] += 0.8 * cfg.pleural_contrast
    return lung_value, pockets, context, emphysema | (bullae > 0)


def _decoy_box(rng: np.random.Generator, lungs: np.ndarray) -> np.ndarray:
    """bool (N, S, S): where each image's token is drawn or would be: the top-right corner, clear of the lungs."""
    n, s = lungs.shape[0], lungs.shape[-1]
    g = (np.arange(s, dtype=np.float32) + 0.5) / s
    tx, ty = rng.uniform(0.8, 0.86, (n, 1, 1)), rng.uniform(0.03, 0.07, (n, 1, 1))
    box = (g >= tx) & (g < tx + 0.1) & (g[:, None] >= ty) & (g[:, None] < ty + 0.09)  # drawn or not
    box &= ~ndimage.binary_dilation(lungs, iterations=2, structure=np.ones((1, 3, 3), bool))
    return box


def _acquire(rng: np.random.Generator, img: np.ndarray, look: dict[str, float], noise: float,
             px: float) -> np.ndarray:
    """uint8 (N, S, S): the scene as a detector records it, with the domain's tone curve and noise per image."""
    n = img.shape[0]
    img = ndimage.gaussian_filter(img, (0, 0.5 * px, 0.5 * px))  # detector blur, also anti-aliases edges
    gamma = (look["gamma"] * np.exp(rng.normal(0, 0.05, (n, 1, 1)))).astype(np.float32)
    gain = (look["gain"] * rng.uniform(0.95, 1.05, (n, 1, 1))).astype(np.float32)
    offset = (look["offset"] + rng.normal(0, 0.015, (n, 1, 1))).astype(np.float32)
    img = offset + gain * np.clip(img, 0, 1) ** gamma
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise * look["noise"])
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def fingerprint(cfg: DecoyConfig) -> str:
    """First 16 hex chars of sha256 over every config field and GENERATOR_VERSION."""
    payload = json.dumps({"generator": GENERATOR_VERSION, **dataclasses.asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def generate_decoy(cfg: DecoyConfig, progress: bool = False, atlas_cache: Path | None = None) -> Bundle:
    """Generate the whole benchmark in memory (deterministic in ``cfg``; ``atlas_cache`` only adds speed)."""
    parts = {}
    for part in PARTS:
        parts[part] = render(cfg, part, atlas_cache).split
        if progress:
            log.info("decoy-cxr: generated %s (%d images)", part, len(parts[part]))
    return Bundle(NAME, SOURCE, parts["train"], parts["val"], parts["test"],
                  {t: parts[t] for t in TARGETS}, fingerprint(cfg), native_masks=True)  # fmt: skip


def cache_path(cfg: DecoyConfig, cache_dir: Path) -> Path:
    """Where :func:`load_decoy` keeps this config's arrays."""
    return Path(cache_dir) / NAME / f"{fingerprint(cfg)}.npz"


def load_decoy(cfg: DecoyConfig, cache_dir: Path) -> Bundle:
    """The benchmark for ``cfg``, generated once and then read from ``cache_dir``."""
    return cached_bundle(cache_path(cfg, cache_dir), lambda: generate_decoy(cfg, atlas_cache=Path(cache_dir) / "lung-atlas"),
                         NAME, SOURCE, TARGETS, fingerprint(cfg))
