"""``dgx analyze``: the paper's evidence figures, reproduced from the real reference data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dgx.config import get_settings

analyze_app = typer.Typer(no_args_is_help=True, help="Reproduce the paper's analysis figures from reference data.")

ReferenceOpt = Annotated[Optional[Path], typer.Option(
    "--reference", help="Folder with cxr_p_splits.csv and cxr_p_gaze.csv.gz. Default: $DGX_REFERENCE_DIR.")]
OutOpt = Annotated[Path, typer.Option("--out", help="PNG to write.")]
SizeOpt = Annotated[int, typer.Option("--size", min=16, max=1024, help="Side of the averaged maps in pixels.")]
SigmaOpt = Annotated[float, typer.Option("--sigma", min=0.0, help="Gaze smoothing: Gaussian std in map pixels.")]
QuantileOpt = Annotated[float, typer.Option(
    "--quantile", min=0.0, max=0.99, help="Hide mean gaze at or below this quantile (rarely visited spots).")]


@analyze_app.command("gaze")
def gaze(
    reference: ReferenceOpt = None,
    out: OutOpt = Path("figures/figure1_gaze.png"),
    size: SizeOpt = 128,
    sigma: SigmaOpt = 3.0,
    quantile: QuantileOpt = 0.8,
) -> None:
    """Figure 1: mean radiologist gaze and mean pneumothorax annotation over CXR-P train+val."""
    from dgx.analyze import default_reference_dir, figure1_data
    from dgx.analyze.figures import figure1

    data = figure1_data(reference or default_reference_dir(), size=size, sigma=sigma,
                        atlas_cache=get_settings().data_dir / "lung-atlas")
    path = figure1(data, out, quantile=quantile)
    typer.echo(f"gaze images (CXR-P train/val with gaze): {data.n_gaze}")
    typer.echo(f"positive masks (CXR-P train/val positives with RLE): {data.n_positive}")
    typer.echo(f"abnormality mass in upper half: {data.abnormality_upper:.3f}")
    typer.echo(f"gaze dwell in upper half: {data.gaze_upper:.3f}")
    # The official code binned gaze transposed, so its "upper half" is our image-left half.
    typer.echo(f"gaze dwell in image-left half: {data.gaze_left:.3f} "
               "(the upper-half share under the official code's transposed binning)")
    typer.echo(f"wrote {path}")
