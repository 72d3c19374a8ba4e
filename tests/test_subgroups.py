"""Worst-subgroup evaluation: the keys (age bands, decoy-cxr attributes), where they are kept, and `dgx report --by`."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from dgx.cli import app
from dgx.data.decoy import DecoyConfig, load_decoy, render
from dgx.data.groups import age_bands, from_rows, order
from dgx.runs import GROUPS, SCORES, load_groups, load_scores, run_dir
from dgx.train import train
from tests.helpers import TINY_DATA, tiny_config, tiny_data
from tests.test_report import add_run

runner = CliRunner()


def test_age_bands_by_hand():
    ages = [49, 49.9, 50, 70, 70.5, None, "", "n/a", 101]
    assert list(age_bands(ages)) == ["<50", "<50", "50-70", "50-70", ">70", "unknown", "unknown", "unknown", ">70"]
    import pandas as pd

    keys = from_rows(pd.DataFrame({"age": [30, None], "sex": ["F", ""], "view": ["AP", None]}))
    assert {k: list(v) for k, v in keys.items()} == {"age": ["<50", "unknown"], "sex": ["F", "unknown"],
                                                     "view": ["AP", "unknown"]}
    assert order(["unknown", ">70", "M", "<50", "F"]) == ["<50", ">70", "F", "M", "unknown"]


def test_decoy_groups_are_the_generators_draws(tmp_path):
    cfg = DecoyConfig(**{k: int(v) for k, v in TINY_DATA.items()}, image_size=32)
    target = render(cfg, "chexpert-age-synth")
    assert list(target.split.groups["decoy"]) == ["token" if d else "no token" for d in target.decoy]
    # Tokens are drawn in exactly the positions the decoy mask marks.
    assert np.array_equal(target.decoy, target.decoy_mask.reshape(len(target.decoy), -1).any(1))
    aged = target.split.groups["age"] == "aged signs"
    assert 0 < aged.sum() < len(aged)  # the age-shifted domain draws aged signs in most images, not all
    assert set(render(cfg, "test").split.groups["age"]) == {"no aged signs"}  # the source never has them
    # The disk cache keeps them; a cache from before they were stored is rebuilt with the same pixels.
    first = load_decoy(cfg, tmp_path)
    again = load_decoy(cfg, tmp_path)
    assert np.array_equal(again.targets["chexpert-age-synth"].groups["age"], target.split.groups["age"])
    path = next((tmp_path / "decoy-cxr").glob("*.npz"))
    with np.load(path) as z:
        np.savez(path, **{k: z[k] for k in z.files if "/group/" not in k})
    rebuilt = load_decoy(cfg, tmp_path)
    assert np.array_equal(rebuilt.test.images, first.test.images)
    assert np.array_equal(rebuilt.test.groups["decoy"], first.test.groups["decoy"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two seeds of tiny ERM on decoy-cxr, trained for real and recorded as a sweep records them."""
    root = tmp_path_factory.mktemp("sub")
    runs_dir = root / "runs"
    url = f"sqlite:///{root / 'db.sqlite3'}"
    study = optuna.create_study(study_name="erm.seeds", storage=url, direction="maximize")
    for seed in (0, 1):
        # Targets of 128 images: ~19 positives per decoy group, enough to be named worst (MIN_CLASS = 10).
        cfg = tiny_config(seed=seed, epochs=1, data_options=tuple(sorted({**TINY_DATA, "n_target": "128"}.items())))
        data = tiny_data(root, cfg)
        run_id = f"erm-s{seed}"
        result = train(cfg, data, run_dir(runs_dir, run_id), progress=False)
        add_run(study, "erm", "none", seed, result.auroc, run_id=run_id, targets=list(data.targets))
    return {"url": url, "runs_dir": runs_dir, "data": data}


def _report(trained, monkeypatch, *args):
    monkeypatch.setenv("DGX_RUNS_DIR", str(trained["runs_dir"]))
    from dgx.config import get_settings

    get_settings.cache_clear()
    return runner.invoke(app, ["report", "--storage", trained["url"], *args])


def test_keys_stay_next_to_the_scores(trained):
    folder = run_dir(trained["runs_dir"], "erm-s0")
    groups, scores = load_groups(folder / GROUPS), load_scores(folder / SCORES)
    assert set(groups) == set(scores)  # every scored domain, in the same image order
    for domain, (labels, _) in scores.items():
        assert len(groups[domain]["decoy"]) == len(labels)
    assert list(groups["chexpert-age-synth"]["decoy"]) == list(trained["data"].targets["chexpert-age-synth"]
                                                              .groups["decoy"])


def test_report_by_decoy_matches_an_independent_recomputation(trained, monkeypatch):
    result = _report(trained, monkeypatch, "--by", "decoy", "--format", "json")
    assert result.exit_code == 0, result.output
    import json

    cells = json.loads(result.output)["cells"]
    for domain in ("mimic-cxr-synth", "chexpert-age-synth"):
        for group in ("token", "no token"):
            per_seed = []
            for seed in (0, 1):
                labels, scores = load_scores(run_dir(trained["runs_dir"], f"erm-s{seed}") / SCORES)[domain]
                inside = trained["data"].targets[domain].groups["decoy"] == group
                per_seed.append(roc_auc_score(labels[inside], scores[inside]))
            cell = next(c for c in cells if c["domain"] == domain and c["group"] == group)
            assert cell["mean"] == pytest.approx(np.mean(per_seed)) and cell["n"] == 2
            assert cell["images"] == int(inside.sum())
    text = _report(trained, monkeypatch, "--by", "decoy").output
    row = next(x for x in text.splitlines() if x.startswith("| _mimic-cxr-synth_"))
    worst = row.rstrip(" |").rsplit("|", 1)[1].strip()
    mimic = {c["group"]: c["mean"] for c in cells if c["domain"] == "mimic-cxr-synth" and c["eligible"]}
    assert len(mimic) == 2 and worst.startswith(min(mimic, key=mimic.get) + ":")
    assert "Worst group" in text and "groups.npz" in text


def test_by_errors_are_one_line(trained, monkeypatch):
    cases = [
        (["--by", "sex"], "record no 'sex' subgroups"),
        (["--by", "height"], "unknown --by 'height'"),
        (["--by", "age", "--baseline", "erm"], "cannot be combined with --baseline"),
        (["--by", "age", "--figure", "bars"], "cannot be combined with --figure"),
        (["--by", "age", "--table", "3"], "cannot be combined with --table"),
    ]
    for args, message in cases:
        result = _report(trained, monkeypatch, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
