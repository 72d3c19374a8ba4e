"""Every report shape on the storages sweeps leave behind: grid searches (one seed), seeds phases, partial runs."""

from __future__ import annotations

import optuna
import pytest
from typer.testing import CliRunner

from dgx.cli import app
from dgx.errors import DgxError
from dgx.report import load_runs
from dgx.report.tables import build
from tests.test_report import SOURCE, TARGETS, add_run, scores

runner = CliRunner()

# A grid search of RRR (periphery): 4 points, all seed 0. Point 2 has the best source validation AUROC;
# point 3 has the best target AUROC but a worse validation score, so it must never be picked.
GRID = [  # (val_auroc, (source, mimic, chexpert))
    (0.70, (0.71, 0.60, 0.61)),
    (0.80, (0.78, 0.64, 0.66)),
    (0.90, (0.83, 0.70, 0.72)),
    (0.85, (0.80, 0.90, 0.91)),
]
SEEDS = [(0.83, 0.70, 0.72), (0.81, 0.69, 0.74), (0.85, 0.73, 0.70)]  # seed 0 is grid point 2 retrained: same run


def _sweep_storage(url: str, *, seeds: int = 3, erm_seeds: int = 3) -> None:
    """What `dgx sweep rrr --mask periphery` and `dgx sweep erm` leave, possibly cut short."""
    search = optuna.create_study(study_name="dgx-rrr-periphery", storage=url, direction="maximize")
    for point, (val, values) in enumerate(GRID):
        add_run(search, "rrr", "periphery", 0, scores(values), phase="search", val_auroc=val, run_id=f"rrr{point}")
    seeds_study = optuna.create_study(study_name="dgx-rrr-periphery.seeds", storage=url, direction="maximize")
    for seed in range(seeds):
        add_run(seeds_study, "rrr", "periphery", seed, scores(SEEDS[seed]), val_auroc=0.9,
                run_id="rrr2" if seed == 0 else f"rrr2-s{seed}")
    erm = optuna.create_study(study_name="dgx-erm", storage=url, direction="maximize")
    add_run(erm, "erm", "none", 0, scores((0.84, 0.55, 0.56)), phase="search", val_auroc=0.88, run_id="erm0")
    erm_study = optuna.create_study(study_name="dgx-erm.seeds", storage=url, direction="maximize")
    for seed in range(erm_seeds):
        add_run(erm_study, "erm", "none", seed, scores((0.84, 0.55 + 0.01 * seed, 0.56)), val_auroc=0.88,
                run_id="erm0" if seed == 0 else f"erm0-s{seed}")


@pytest.fixture
def url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/dgx.db"
    _sweep_storage(url)
    return url


def _cell(table, domain: str, label: str) -> list[str]:
    current = None
    for row in table.rows:
        current = row[0] or current
        if current == domain and row[1] == label:
            return row
    raise AssertionError(f"no row {domain}/{label} in {table.rows}")


def test_search_phase_picks_the_best_validation_point_never_a_target(url):
    (t,) = build(load_runs(url, phase="search"), "1")
    row = _cell(t, TARGETS[0], "RRR (periphery)")
    assert row[2] == "70.0 ± n/a" and row[3] == "1"  # grid point 2 (val 0.90), not point 3 (target 0.90)
    assert "best source-validation AUROC (4 trials in 1 such group)" in t.note and "targets play no part" in t.note


def test_phase_all_counts_the_selected_run_once(url):
    (t,) = build(load_runs(url, phase=None), "1")
    row = _cell(t, SOURCE, "RRR (periphery)")
    assert row[3] == "3"  # seeds 0, 1, 2: the search point that seed 0 retrains is not a 4th value
    mean = sum(v[0] for v in SEEDS) / 3
    assert row[2].startswith(f"{100 * mean:.1f} ± ")


@pytest.mark.parametrize("phase", ["search", "seeds", "all"])
@pytest.mark.parametrize("table", ["1", "2", "3", "5"])
def test_every_shape_and_phase_renders_on_a_partial_storage(tmp_path, phase, table):
    url = f"sqlite:///{tmp_path}/partial.db"
    _sweep_storage(url, seeds=1, erm_seeds=2)  # a sweep cut short: RRR has one seed, ERM two, no ActDiff
    result = runner.invoke(app, ["report", "--storage", url, "--phase", phase, "--table", table])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "— = not run; n/a = not applicable" in out
    if table == "2":  # no ActDiff at all: the three paper rows, all not run
        for name in ("Abnormality", "Scaled abnormality", "Lung periphery"):
            line = next(x for x in out.splitlines() if x.startswith(f"| {name}"))
            assert line.count("—") == 4, line
        assert "no ActDiff runs on decoy-cxr" in out
    if table == "5":  # RRR ran with the periphery mask only
        line = next(x for x in out.splitlines() if x.startswith("| Abnormality"))
        assert line.count("—") == 4
        periphery = next(x for x in out.splitlines() if x.startswith("| Lung periphery"))
        assert "—" not in periphery
    if table == "3":  # Gain: not applicable for ERM, not run for RRR (no abnormality-mask RRR)
        rows = [x for x in out.splitlines() if x.startswith("|") and ("ERM" in x or "RRR" in x)]
        assert all(x.rstrip(" |").endswith("n/a") for x in rows if "ERM" in x)
        assert all(x.rstrip(" |").endswith("—") for x in rows if "RRR" in x)


def test_average_over_fewer_seeds_is_noted(tmp_path):
    url = f"sqlite:///{tmp_path}/gap.db"
    study = optuna.create_study(study_name="s.seeds", storage=url, direction="maximize")
    add_run(study, "erm", "none", 0, scores((0.8, 0.7, 0.6)))
    add_run(study, "erm", "none", 1, scores((0.8, 0.7, 0.6)))
    add_run(study, "erm", "none", 2, {SOURCE: 0.8, TARGETS[0]: 0.7})  # chexpert never scored for seed 2
    (t,) = build(load_runs(url), "1")
    assert _cell(t, "Target average", "ERM")[3] == "2" and _cell(t, TARGETS[0], "ERM")[3] == "3"
    assert "target average only over seeds scored on every target, fewer than its cells for ERM 2 of 3" in t.note


def test_mixed_profiles_for_one_seed_are_an_error(tmp_path):
    url = f"sqlite:///{tmp_path}/mixed.db"
    study = optuna.create_study(study_name="m", storage=url, direction="maximize")
    add_run(study, "erm", "none", 0, scores((0.8, 0.7, 0.6)), phase="search", run_id="a")
    add_run(study, "erm", "none", 0, scores((0.8, 0.7, 0.6)), phase="search", run_id="b", profile="official")
    with pytest.raises(DgxError, match="trials of profiles official, paper .*--study-prefix"):
        build(load_runs(url, phase="search"), "1")


def test_ties_break_on_the_run_not_the_trial_number(tmp_path):
    """A retried point gets a new trial number; the selection must not change because of that."""
    url = f"sqlite:///{tmp_path}/tie.db"
    study = optuna.create_study(study_name="t", storage=url, direction="maximize")
    add_run(study, "erm", "none", 0, scores((0.8, 0.6, 0.6)), phase="search", val_auroc=1.0, run_id="bbb")
    add_run(study, "erm", "none", 0, scores((0.8, 0.7, 0.7)), phase="search", val_auroc=1.0, run_id="aaa")
    (t,) = build(load_runs(url, phase="search"), "1")
    assert _cell(t, TARGETS[0], "ERM")[2] == "70.0 ± n/a"  # run "aaa", although it is the later trial
