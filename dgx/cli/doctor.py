"""``dgx doctor``: check a runs folder (and a storage) for damage a crash or a full disk left; repair with --fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def doctor(
    runs_dir: Annotated[Optional[Path], typer.Option("--runs-dir", help="Runs folder to check. Default: DGX_RUNS_DIR or runs/.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Also check this Optuna storage against the folders (orphans, trials with no folder, WAITING duplicates). Default: none (folders only); pass --storage default for DGX_STORAGE.")] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Repair: quarantine damaged and orphaned folders (moved, never deleted), delete stray temporary files, close WAITING duplicates, and train again the COMPLETE trials whose folder is gone.")] = False,
    device: Annotated[str, typer.Option("--device", help="Device for trainings that --fix redoes.")] = "auto",
) -> None:
    """Find damaged run folders, stray temporary files, orphaned folders, trials with no folder and WAITING duplicates."""
    # the library loads when the command runs (dgx --help stays fast)
    from dgx.config import get_settings
    from dgx.doctor import retrain_trial, scan_runs, scan_storage
    from dgx.errors import DgxError

    from dgx.checks import check_device  # the library loads when the command runs (dgx --help stays fast)

    settings = get_settings()
    check_device(device)  # before anything is read: --fix may train
    root = Path(runs_dir or settings.runs_dir)
    if not root.is_dir():
        raise DgxError(f"runs folder {root} does not exist; pass --runs-dir (or set DGX_RUNS_DIR) to the folder "
                       "your sweeps train in")
    findings = scan_runs(root, fix)
    if storage is not None:
        url = settings.default_storage() if storage == "default" else storage
        findings += scan_storage(root, url, fix, lambda attrs, folder: retrain_trial(attrs, folder, device))
    for f in findings:
        typer.echo(f"{f.kind:18} {f.where}: {f.detail}" + (f" -> {f.fixed}" if f.fixed else ""))
    kinds = sorted({f.kind for f in findings})
    checked = f"{root}" + (" and the storage" if storage is not None else "")
    if not findings:
        typer.echo(f"ok: nothing to repair in {checked}")
    elif fix:
        typer.echo(f"repaired {len(findings)} finding(s) ({', '.join(kinds)}) in {checked}")
    else:
        typer.echo(f"{len(findings)} finding(s) ({', '.join(kinds)}) in {checked}; rerun with --fix to repair")
        raise typer.Exit(1)
