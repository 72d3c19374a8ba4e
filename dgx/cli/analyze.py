"""``dgx analyze``: the paper's evidence figures, reproduced from the real reference data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dgx.checks import check_choice, check_device, check_folder, check_name, check_out_file
from dgx.config import get_settings
from dgx.errors import DgxError

analyze_app = typer.Typer(no_args_is_help=True, help="Reproduce the paper's analysis figures from reference data.")

ReferenceOpt = Annotated[Optional[Path], typer.Option(
    "--reference", help="Folder with cxr_p_splits.csv and cxr_p_gaze.csv.gz. Default: $DGX_REFERENCE_DIR.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Figure to write: .png, .pdf or .svg (the suffix picks the format).")]
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
    check_out_file(out, figure=True)
    from dgx.analyze import default_reference_dir, figure1_data  # pandas, scipy: only when the command runs
    from dgx.analyze.figures import figure1  # matplotlib: only when the command runs

    data = figure1_data(reference or default_reference_dir(), size=size, sigma=sigma,
                        atlas_cache=get_settings().data_dir / "lung-atlas")
    path = figure1(data, out, quantile=quantile)
    typer.echo(f"gaze images (CXR-P train/val with gaze): {data.n_gaze}")
    typer.echo(f"positive masks (CXR-P train/val positives with RLE): {data.n_positive}")
    typer.echo(f"abnormality mass in upper half: {data.abnormality_upper:.3f}")
    typer.echo(f"gaze dwell in upper half: {data.gaze_upper:.3f}")
    typer.echo(f"pixel correlation of mean gaze with mean abnormality: {data.gaze_abnormality_r:.3f}")
    typer.echo(f"wrote {path}")


@analyze_app.command("attribution")
def attribution(
    study: Annotated[Optional[list[str]], typer.Option("--study", help="Study name or prefix, repeatable (e.g. the main job's rrr-periphery-decoy-cxr-quick and erm-none-decoy-cxr-quick). Default: every study.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL. Default: DGX_STORAGE or sqlite:///runs/dgx.db.")] = None,
    phase: Annotated[str, typer.Option("--phase", help="Trials to audit: seeds (the table's runs) | search | all.")] = "seeds",
    runs_dir: Annotated[Optional[Path], typer.Option("--runs-dir", help="Where the run folders (checkpoints) are. Default: DGX_RUNS_DIR or ./runs.")] = None,
    max_images: Annotated[int, typer.Option("--max-images", min=1, help="Images per domain and run (spread evenly over the split).")] = 256,
    domain: Annotated[Optional[str], typer.Option("--domain", help="Domain shown in the figure. Default: the source test split.")] = None,
    out: OutOpt = Path("figures/attribution.png"),
    device: Annotated[str, typer.Option("--device", help="cpu | cuda | cuda:N.")] = "cpu",
) -> None:
    """Where each method's selected checkpoints look: saliency mass on the abnormality, the periphery, the decoy, elsewhere.

    Prints one row per method and domain (source test and every target) with the
    share of |∂(z₁−z₀)/∂x| in each region, the region's share of the image area
    beside it, and writes a PNG of mean saliency per method over the mean image.
    """
    settings = get_settings()
    check_choice("--phase", phase, ("seeds", "search", "all"))
    for name in study or []:
        check_name("--study", name)
    check_device(device)
    check_out_file(out, figure=True)
    if runs_dir is not None:
        check_folder(runs_dir, "--runs-dir")
    from dgx.analyze.attribution import audit_runs, audit_table, figure, study_runs  # torch: only when it runs

    def check_domain(refs) -> None:  # before minutes of saliency maps
        known = refs[0].domains
        if domain is not None and known and known[0] and domain not in known:
            raise DgxError(f"--domain {domain!r} is not a domain of these runs; choose from: {', '.join(known)}")

    refs = study_runs(storage or settings.default_storage(), tuple(study) if study else None,
                      None if phase == "all" else phase, runs_dir or settings.runs_dir, check_domain)
    groups, data_of = audit_runs(refs, settings.data_dir, device, max_images)
    counts = {label: sum(r.label == label for r in refs) for label in groups}
    typer.echo("Saliency mass by region, % of |∂(z₁−z₀)/∂x| (area % in parentheses), mean over runs\n")
    typer.echo(audit_table(groups, counts))
    first = next(iter(data_of.values()))
    shown = domain or first.source
    split = {first.source: first.test, **first.targets}.get(shown)
    if split is None:
        raise DgxError(f"--domain {shown!r} is not a domain of {first.name}; choose from: "
                       f"{', '.join([first.source, *first.targets])}")
    outline = {k: split.anatomy[k].mean(0) for k in ("periphery", "decoy") if k in split.anatomy}
    path = figure(groups, split.images.mean(0), shown, out, outline)
    typer.echo(f"\nwrote {path}")
