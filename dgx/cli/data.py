"""``dgx data``: prepare real chest X-ray datasets as manifests (one CSV per domain and split)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from dgx.errors import DgxError

data_app = typer.Typer(no_args_is_help=True, help="Prepare real chest X-ray datasets: manifests, curation, cache.")


def parse_opts(items: list[str] | None) -> dict[str, str]:
    from dgx.checks import parse_options  # the library loads when the command runs (dgx --help stays fast)

    return dict(parse_options(items, "--opt", "siim_map=nih_siim.csv"))


@data_app.command("prepare")
def prepare(
    source: Annotated[str, typer.Argument(help="Source: siim (CXR-P, CXR-P Full) | chestxray8 | chexpert | mimic.",
                                          show_default=False)],
    root: Annotated[Optional[Path], typer.Option("--root", help="The dataset's top folder (images and, optionally, "
                                                 "metadata CSVs). Needed unless --metadata-only.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the manifests. Default: "
                                                "<DGX_DATA_DIR>/manifests.")] = None,
    metadata_only: Annotated[bool, typer.Option("--metadata-only", help="Build from metadata alone, without "
                                                "checking that the image files exist.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the target sampling (same seed, same manifest).")] = 0,
    splits: Annotated[Optional[Path], typer.Option("--splits", help="siim only: the paper's split list CSV (split, "
                                                   "image_id, dicom_path, label). Without it, a seeded stratified "
                                                   "split of the same sizes is drawn.")] = None,
    opt: Annotated[Optional[list[str]], typer.Option("--opt", help="Source option KEY=VALUE, repeatable, e.g. "
                                                     "n=4607, positives=1014, siim_map=CSV, siim_root=DIR, "
                                                     "protocol=seeded|official (official: the paper code's "
                                                     "target lists, mean ages 71.391 / 51.126 / 78.561).")] = None,
) -> None:
    """Curate a source's evaluation sets (paper §3) and write them as manifests.

    Sampling is seeded and deterministic; files are written atomically. A summary
    table (images, positives, ages, views) goes to stdout.
    """
    from dgx.config import get_settings  # the library loads when the command runs (dgx --help stays fast)
    from dgx.prep.manifest import summary
    # the library loads when the command runs (dgx --help stays fast)
    from dgx.prep.sources import get_source, prepare_source
    from dgx.progress import console

    get_source(source)  # fail fast on an unknown name, before parsing anything else
    options = parse_opts(opt)
    if splits is not None:
        if source != "siim":
            raise DgxError(f"--splits is for the siim source only, not {source}; drop it")
        options["splits"] = str(splits)
    out_dir = out if out is not None else get_settings().data_dir / "manifests"
    from dgx.checks import check_folder  # the library loads when the command runs (dgx --help stays fast)

    check_folder(out_dir, "--out" if out is not None else "DGX_DATA_DIR")
    if splits is not None and not splits.is_file():
        raise DgxError(f"--splits {splits} is not an existing file; pass the paper's split list CSV, or drop --splits "
                       "for a seeded split")
    written = prepare_source(source, root, out_dir, metadata_only=metadata_only, seed=seed, options=options)
    for path, _ in written.values():
        console.print(f"wrote {path}")
    table = Table(title=f"dgx data prepare {source} (seed {seed})")
    for col, justify in (("manifest", "left"), ("images", "right"), ("positives", "right"),
                         ("mean age", "right"), ("min age", "right"), ("views", "left")):
        table.add_column(col, justify=justify, no_wrap=col == "manifest")
    stats = summary({key: frame for key, (_, frame) in written.items()})
    for key, row in stats.iterrows():
        table.add_row(key, f"{row.n:,}", f"{row.positives:,}", _age(row.mean_age, 2), _age(row.min_age, 0), row.views)
    from dgx.progress import result_console  # the library loads when the command runs (dgx --help stays fast)

    result_console().print(table)


def _age(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


from dgx.cli.data_cache import cache as _cache  # noqa: E402

data_app.command("cache")(_cache)
