"""Patient data never leaves the machine: the W&B files of a real-data sweep hold no
pixels, image IDs, image paths or patient IDs.

W&B runs offline here (no server is reachable); the offline run files are exactly
what `wandb sync` would upload, so they are what this test reads.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from dgx.cli import app
from dgx.data.real import load_real
from tests.helpers import named_study
from tests.test_real_pipeline import SIZE, prepared  # noqa: F401  (pytest fixture)


def test_offline_wandb_files_hold_no_pixels_or_ids(prepared, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WANDB_MODE", "offline")
    result = CliRunner().invoke(app, [
        "sweep", "rrr", "--data", "cxr-p", "--mask", "abnormality", "--trials", "1", "--seeds", "1",
        "--epochs", "1", "--no-baseline", "--image-size", str(SIZE), "--model", "resnet18-w16", "--weights", "none",
        "--storage", f"sqlite:///{tmp_path / 'db.sqlite3'}"])
    assert result.exit_code == 0, result.output

    files = [p for p in (tmp_path / "runs" / "wandb").rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)  # the run really was written
    assert not [p for p in files if p.name in ("requirements.txt", "conda-environment.yaml", "wandb-metadata.json")]
    blob = b"".join(p.read_bytes() for p in files)
    assert b"val/auroc" in blob  # metrics did go in: the check below is not vacuous
    # ROC curves of the selected checkpoint: 101 (FPR, TPR) points per domain, nothing per image.
    tables = [p for p in files if "roc" in p.name and p.name.endswith(".table.json")]
    assert tables, sorted(p.name for p in files)
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["domain", "fpr", "tpr"]
    domains = {row[0] for row in table["data"]}
    assert "cxr-p" in domains and len(table["data"]) == 101 * len(domains)
    trial = named_study(f"sqlite:///{tmp_path / 'db.sqlite3'}", "rrr-abnormality-cxr-p-quick").trials[0]
    assert trial.user_attrs["wandb_run"] and trial.user_attrs["wandb_run"].encode() in blob  # the run id is stored

    manifests = [pd.read_csv(p, dtype=str) for p in (prepared["data"] / "manifests").glob("cxr-p.*.csv")]
    rows = pd.concat(manifests)
    # image paths, and every path component: study/series/SOP instance UIDs are the image IDs
    secrets = set(rows["image"]) | {part for img in rows["image"] for part in PurePosixPath(img).parts}
    secrets |= {PurePosixPath(img).stem for img in rows["image"]}
    # Patient IDs too, where long enough not to occur in a binary file by chance (the fixture's "p12" are not).
    secrets |= {p for p in rows["patient_id"].dropna() if len(p) >= 6}
    assert len(secrets) > 20
    leaked = sorted(s for s in secrets if s.encode() in blob)
    assert not leaked, leaked

    # Per-image subgroup keys stay in the run folder, beside the scores, and are never uploaded.
    kept = list((tmp_path / "runs" / "runs").rglob("groups.npz"))
    assert kept and b"groups.npz" not in blob
    report = CliRunner().invoke(app, ["report", "--storage", f"sqlite:///{tmp_path / 'db.sqlite3'}", "--by", "sex"])
    assert report.exit_code == 0, report.output
    header = next(line for line in report.output.splitlines() if line.startswith("| Dataset"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["Dataset", "Method", "All", "F", "M", "Worst group"]  # NIH's sexes, from the manifest

    bundle = load_real("cxr-p", {}, SIZE, prepared["data"])
    for i in range(3):  # no image's raw pixel rows appear in the files
        row = np.ascontiguousarray(bundle.train.images[i, SIZE // 2]).tobytes()
        assert row not in blob
