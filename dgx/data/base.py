"""The in-memory form every dataset is loaded into.

A dataset is one source domain (train/val/test splits) plus any number of
target domains used only for evaluation. Images are uint8 grayscale arrays
(N, H, W); masks are uint8 {0,1} arrays of the same shape, keyed by kind.
An all-ones mask means "no attribution constraint" (negatives, and positives
without an annotation), so every method's penalty is zero for that image.

``anatomy`` holds per-image regions that are not attribution masks but
ground truth about the image, for *every* image: ``lungs``, the lung
``periphery`` band (without the abnormality), and on synthetic data the
``decoy`` box (where the shortcut token is, or would be, drawn). They give
unannotated images a mask when training asks for one (``negative_masks``)
and let ``dgx analyze attribution`` say where a model looks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dgx.runs import atomic_write

# Mask kinds a dataset may provide. "none" is always available (all ones);
# "gaze" only where radiologist gaze was cached (real CXR-P with `dgx data cache --gaze`).
MASK_KINDS = ("abnormality", "scaled", "periphery", "gaze", "none")
# What an image without an annotation (all-ones mask) is constrained to. "ones" is the
# paper's setting (no constraint); the others take that region from the image's anatomy.
NEGATIVE_MASKS = ("ones", "lungs", "periphery")


@dataclass
class Split:
    """One split of one domain: images, binary labels and attribution masks."""

    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 (N,), 1 = pneumothorax
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> uint8 (N, H, W)
    anatomy: dict[str, np.ndarray] = field(default_factory=dict)  # region -> uint8 (N, H, W), every image
    # Subgroup key -> str (N,) label per image (age band, sex, view, ...; see dgx.data.groups). Evaluation only.
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    # The same images as the released code decoded them (real data, dgx/prep/decode.py), which the official
    # profile trains and scores on; None where there is no file to decode (generated data).
    released_images: np.ndarray | None = None
    _filled: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        if self.released_images is not None and self.released_images.shape != self.images.shape:
            raise ValueError(f"released images have shape {self.released_images.shape}, images {self.images.shape}")
        for what, arrays in (("mask", self.masks), ("anatomy region", self.anatomy)):
            for kind, m in arrays.items():
                if m.shape != self.images.shape:
                    raise ValueError(f"{what} {kind!r} has shape {m.shape}, images have {self.images.shape}")
        for key, g in self.groups.items():
            if np.shape(g) != (n,):
                raise ValueError(f"subgroup key {key!r} has shape {np.shape(g)}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.images)

    def mask(self, kind: str, negatives: str = "ones") -> np.ndarray:
        """The mask array of this kind; "none" is all ones.

        ``negatives`` other than "ones" replaces the mask of every unconstrained
        image (all-ones mask: negatives, unannotated positives) with that
        anatomy region, so the method's penalty applies to those images too.
        """
        if kind == "none":
            return np.ones_like(self.images)
        if kind not in self.masks:
            raise KeyError(kind)
        if negatives == "ones":
            return self.masks[kind]
        if negatives not in self.anatomy:
            raise KeyError(f"anatomy:{negatives}")
        key = (kind, negatives)
        if key not in self._filled:
            mask = self.masks[kind]
            free = unconstrained(mask)
            filled = np.array(mask, dtype=np.uint8)
            filled[free] = self.anatomy[negatives][free]
            self._filled[key] = filled
        return self._filled[key]


def unconstrained(mask: np.ndarray) -> np.ndarray:
    """bool (N,): which images' masks are all ones (no attribution constraint)."""
    return np.asarray(mask).reshape(len(mask), -1).min(axis=1) > 0


@dataclass
class Bundle:
    """A source domain with its splits and the OOD target domains."""

    name: str  # dataset name, e.g. "decoy-cxr"
    source: str  # source domain name, e.g. "cxr-p-synth"
    train: Split
    val: Split
    test: Split
    targets: dict[str, Split]  # target domain name -> split (evaluation only)
    fingerprint: str  # content hash of the generating config; part of every run's identity
    # The train+val pool the released code draws its per-seed split from, where it is not simply
    # train + val (CXR-P: the 951 images with gaze); see dgx/data/released.py.
    pool: Split | None = None
    # Masks drawn at the training resolution (synthetic data): resizing them is the identity.
    native_masks: bool = False

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def _parts(bundle: Bundle) -> list[tuple[str, Split]]:
    return [("train", bundle.train), ("val", bundle.val), ("test", bundle.test), *bundle.targets.items()]


def bundle_arrays(bundle: Bundle) -> dict[str, np.ndarray]:
    """A generated bundle as flat named arrays (``PART/images``, ``PART/mask/KIND``, ...), for an npz cache."""
    out = {}
    for part, split in _parts(bundle):
        out[f"{part}/images"], out[f"{part}/labels"] = split.images, split.labels
        out.update({f"{part}/mask/{k}": m for k, m in split.masks.items()})
        out.update({f"{part}/anatomy/{k}": m for k, m in split.anatomy.items()})
        out.update({f"{part}/group/{k}": np.asarray(g).astype(str) for k, g in split.groups.items()})
    return out


def bundle_from_arrays(arrays: dict[str, np.ndarray], name: str, source: str, targets: tuple[str, ...],
                       fingerprint: str) -> Bundle:
    """:func:`bundle_arrays` back into a bundle; KeyError where a part lacks its arrays or subgroup keys
    (a cache written by an older generator: regenerate)."""
    def split(part: str) -> Split:
        def group(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        groups = group(f"{part}/group/")
        if not groups:
            raise KeyError(f"{part}/group/")
        return Split(arrays[f"{part}/images"], arrays[f"{part}/labels"], group(f"{part}/mask/"),
                     group(f"{part}/anatomy/"), groups)

    return Bundle(name, source, split("train"), split("val"), split("test"), {t: split(t) for t in targets},
                  fingerprint, native_masks=True)


def cached_bundle(path, make, name: str, source: str, targets: tuple[str, ...], fingerprint: str) -> Bundle:
    """The generated bundle cached at ``path`` (an npz of :func:`bundle_arrays`), else ``make()`` written
    there; a truncated or foreign file is regenerated."""
    path = Path(path)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return bundle_from_arrays({k: z[k] for k in z.files}, name, source, targets, fingerprint)
        except (OSError, ValueError, KeyError) as e:
            logging.getLogger("dgx").warning("%s cache %s unreadable (%s); regenerating", name, path, e)
    bundle = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:  # a concurrent reader sees no file or a whole one
        np.savez_compressed(tmp, **bundle_arrays(bundle))
    return bundle
