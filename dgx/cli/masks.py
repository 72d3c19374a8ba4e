"""``dgx masks``: look at the attribution masks a dataset provides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dgx.config import get_settings
from dgx.errors import DgxError

masks_app = typer.Typer(no_args_is_help=True, help="Inspect attribution masks (abnormality, scaled, periphery, and gaze on cached CXR-P).")

DataOpt = Annotated[str, typer.Option("--data", help="Dataset: decoy-cxr or decoy-mnist (built in), cxr-p or cxr-p-full (prepared and cached real data; gaze masks where the cache was built with --gaze).")]
DataOptsOpt = Annotated[Optional[list[str]], typer.Option("--data-opt", help="Dataset option KEY=VALUE, repeatable.")]
ImageSizeOpt = Annotated[Optional[int], typer.Option(
    "--image-size", min=16, help="Selects the dataset built at this image side (and builds it if it is not cached "
    "yet: a whole new dataset). Default: the dataset's. For a bigger picture use --zoom or --dpi.")]
ZoomOpt = Annotated[Optional[int], typer.Option(
    "--zoom", min=1, max=64, help="Draw each image pixel as an N x N block (nearest neighbour, display only; the "
    "dataset is untouched). Default: the smallest N giving 3-inch panels at --dpi.")]
DpiOpt = Annotated[int, typer.Option("--dpi", min=50, max=600, help="PNG pixels per inch: scales the whole "
                                     "figure, text included (the dataset is untouched).")]
IndexOpt = Annotated[int, typer.Option("--index", min=0, help="Which positive of the source train split (0 = first).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Figure to write: .png, .pdf or .svg (the suffix picks the format).")]


@masks_app.command("show")
def show(
    data: DataOpt = "decoy-cxr",
    data_opt: DataOptsOpt = None,
    image_size: ImageSizeOpt = None,
    index: IndexOpt = 0,
    out: OutOpt = Path("figures/figure2_masks.png"),
    zoom: ZoomOpt = None,
    dpi: DpiOpt = 150,
) -> None:
    """Figure 2: one positive training image with each of its masks highlighted, side by side."""
    import numpy as np  # the library loads when the command runs (dgx --help stays fast)

    # the library loads when the command runs (dgx --help stays fast)
    from dgx.checks import check_folder, check_out_file, parse_options
    # the library loads when the command runs (dgx --help stays fast)
    from dgx.data import MASK_KINDS, check_options, load_dataset

    settings = get_settings()
    options = dict(parse_options(data_opt))
    decoy = check_options(data, options, image_size)  # before building anything
    check_out_file(out, figure=True)
    check_folder(settings.data_dir, "DGX_DATA_DIR")
    if decoy is not None and index >= round(decoy.pos_frac * decoy.n_train):
        n = round(decoy.pos_frac * decoy.n_train)
        raise DgxError(f"--index {index} is out of range: {data} train has {n} positives (0..{n - 1}); pick a "
                       "smaller --index")
    from dgx.analyze.figures import figure2  # the library loads when the command runs (dgx --help stays fast)

    bundle = load_dataset(data, options, image_size, settings.data_dir)
    split = bundle.train
    positives = np.flatnonzero(split.labels == 1)
    if index >= len(positives):
        raise DgxError(f"--index {index} is out of range: {data} train has {len(positives)} positives "
                       f"(0..{len(positives) - 1}); pick a smaller --index")
    i = int(positives[index])
    # Gaze exists only for real CXR-P images, so synthetic data shows the three drawn kinds.
    masks = {k: split.masks[k][i] for k in MASK_KINDS if k in split.masks}
    title = f"{data} ({bundle.source}) train image {i}, positive #{index}"
    path = figure2(split.images[i], masks, out, title=title, zoom=zoom, dpi=dpi)
    for kind, m in masks.items():
        typer.echo(f"{kind}: {int(m.sum())} px ({100 * m.mean():.1f}% of image)")
    typer.echo(f"wrote {path}")
