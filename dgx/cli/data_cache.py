"""``dgx data cache``: decode a prepared dataset's images once into a memory-mapped cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dgx.errors import DgxError


def cache(
    root: Annotated[Path, typer.Option("--root", help="The dataset's top folder; manifest image paths are "
                                       "relative to it.", show_default=False)],
    manifests: Annotated[Optional[list[Path]], typer.Option("--manifests", help="Manifest CSV to cache, repeatable. "
                                                            "Default: every CSV in --manifest-dir.")] = None,
    manifest_dir: Annotated[Optional[Path], typer.Option("--manifest-dir", help="Folder of manifests used when "
                                                         "--manifests is not given. Default: "
                                                         "<DGX_DATA_DIR>/manifests.")] = None,
    size: Annotated[int, typer.Option("--size", min=8, help="Side in pixels of the cached images and masks.")] = 224,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder holding the caches (one sub-folder per "
                                                "content hash). Default: <DGX_DATA_DIR>/cache.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad/--fail-bad", help="Drop unreadable images with a warning "
                                           "(--skip-bad) or stop at the first one (--fail-bad).")] = False,
    lung_dir: Annotated[Optional[Path], typer.Option("--lung-dir", help="Folder of lung masks <image stem>.png "
                                                     "for the periphery masks. Default: a lung-atlas template.")] = None,
    rle: Annotated[Optional[Path], typer.Option("--rle", help="SIIM RLE CSV for rle: abnormalities. Default: the "
                                                "copy torchxrayvision ships.")] = None,
    lung_model: Annotated[str, typer.Option("--lung-model", help="Lungs for positives without a user mask: PATH to "
                                            "torchxrayvision's PSPNet weights (pspnet_chestxray_best_model_4.pth), "
                                            "'auto' (that file in $DGX_LUNG_MODEL or ~/.torchxrayvision/models_data "
                                            "if present) or 'none' (the lung-atlas template). Never downloads.")] = "auto",
    gaze: Annotated[Optional[Path], typer.Option("--gaze", help="CXR-P gaze CSV (image_id, x, y, t per fixation): "
                                                 "adds the 'gaze' mask kind for positives with gaze.")] = None,
    gaze_quantile: Annotated[float, typer.Option("--gaze-quantile", min=0.0, max=0.99, help="A gaze mask keeps the "
                                                 "pixels above this quantile of the image's smoothed gaze.")] = 0.8,
    periphery_ids: Annotated[Optional[Path], typer.Option("--periphery-ids", help="The released lung annotations' image "
                                                          "ids (../shared/reference/lung_periphery_annotated_ids.csv): "
                                                          "adds 'periphery_released', the periphery masks of "
                                                          "--profile official (needed on cxr-p-full).")] = None,
) -> None:
    """Decode every image of the manifests once, resize, and store images + masks memory-mapped.

    The cache folder is named by a hash of the manifests, size and mask options:
    rerunning is instant, and a changed manifest or size builds a new one.
    """
    # the library loads when the command runs (dgx --help stays fast)
    from dgx.checks import check_folder
    from dgx.config import get_settings
    from dgx.prep.cache_builder import build_cache, read_index
    from dgx.prep.lungseg import find_weights
    from dgx.progress import console

    data_dir = get_settings().data_dir
    _check_paths([("--root", root, "folder"), ("--lung-dir", lung_dir, "folder"), ("--rle", rle, "file"),
                  ("--gaze", gaze, "file"), ("--periphery-ids", periphery_ids, "file"),
                  *(("--manifests", m, "file") for m in manifests or [])])
    check_folder(out if out is not None else data_dir / "cache", "--out" if out is not None else "DGX_DATA_DIR")
    if not manifests:
        folder = manifest_dir if manifest_dir is not None else data_dir / "manifests"
        manifests = _under_root(sorted(Path(folder).glob("*.csv")), root, folder)
    path = build_cache(list(manifests), root, size, out if out is not None else data_dir / "cache",
                       on_error="skip" if skip_bad else "fail", lung_dir=lung_dir, rle=rle,
                       lung_model=find_weights(lung_model), gaze=gaze, gaze_quantile=gaze_quantile,
                       periphery_ids=periphery_ids)
    index = read_index(path)
    lungs = ", ".join(f"{v} {k}" for k, v in index.get("lungs", {}).items() if v)
    console.print(f"cache {path}: {index['n']} images at {size} px, {len(index['dropped'])} dropped; "
                  f"masks {', '.join(index.get('masks', []))}; lungs: {lungs or 'no annotated positives'}")
    typer.echo(str(path))


def _check_paths(paths: list[tuple[str, Path | None, str]]) -> None:
    """Each given (flag, path, "file" | "folder") exists as such."""
    for flag, path, kind in paths:
        if path is not None and not (path.is_dir() if kind == "folder" else path.is_file()):
            raise DgxError(f"{flag} {path} is not an existing {kind}; check the path")


def _under_root(found: list[Path], root: Path, folder: Path) -> list[Path]:
    """The manifests of ``folder`` whose images lie under ``root`` (each source has its own root: one cache
    call per root); says which others it left for their own call."""
    import pandas as pd  # the library loads when the command runs (dgx --help stays fast)

    from dgx.progress import say  # the library loads when the command runs (dgx --help stays fast)

    if not found:
        raise DgxError(f"no manifests in {folder}; run `dgx data prepare SOURCE` or pass --manifests FILE")
    mine, others = [], {}
    for path in found:
        try:
            first = pd.read_csv(path, usecols=["image"], nrows=1, dtype=str)["image"]
        except (ValueError, OSError, pd.errors.ParserError):
            raise DgxError(f"manifest {path} cannot be read as a manifest (no 'image' column); rebuild it with "
                           "`dgx data prepare SOURCE` or move it out of the manifest folder") from None
        if first.empty or (root / first.iloc[0]).exists():
            mine.append(path)
        else:
            others[path.name] = first.iloc[0]
    if not mine:
        name, image = next(iter(others.items()))
        raise DgxError(f"no manifest in {folder} has its images under --root {root} (e.g. {name} lists {image}); "
                       "pass the --root its source was prepared from, or --manifests FILE")
    if others:
        say(f"caching {', '.join(p.name for p in mine)} (images under {root}); left out {', '.join(others)}: their "
            "images are under another root, so cache them with `dgx data cache --root THAT_ROOT`")
    return mine
