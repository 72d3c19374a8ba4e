"""Tests for dgx.report: loading trials from Optuna storage and rendering Table 1."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats

from dgx.errors import DgxError
from dgx.report import load_runs, mean_ci, report, table1, table1_cells
from dgx.report.tables import fmt_cell

optuna.logging.set_verbosity(optuna.logging.WARNING)

SOURCE = "cxr-p-synth"
TARGETS = ["mimic-cxr-synth", "chexpert-synth"]
# method, mask -> per seed (source, mimic, chexpert) test AUROCs.
RESULTS = {
    ("erm", "none"): [(0.83, 0.77, 0.80), (0.85, 0.78, 0.82), (0.84, 0.76, 0.81)],
    ("rrr", "periphery"): [(0.82, 0.75, 0.78), (0.845, 0.79, 0.80), (0.83, 0.77, 0.83)],
}


def add_run(study: optuna.Study, method: str, mask: str, seed: int, auroc: dict[str, float],
            phase: str = "seeds", state: TrialState = TrialState.COMPLETE, targets=None, **extra) -> None:
    """Add one trial carrying the user attrs `dgx sweep` writes."""
    attrs = {
        "method": method, "mask": mask, "dataset": "decoy-cxr", "source": SOURCE,
        "targets": list(TARGETS if targets is None else targets), "phase": phase, "seed": seed,
        "val_auroc": 0.9, "auroc": auroc, "config": {"lr": 1e-4}, **extra,
    }
    study.add_trial(create_trial(
        state=state, value=0.9 if state == TrialState.COMPLETE else None, params={"lr": 1e-4},
        distributions={"lr": FloatDistribution(1e-5, 1e-3, log=True)}, user_attrs=attrs,
    ))


def scores(values: tuple[float, float, float]) -> dict[str, float]:
    return dict(zip([SOURCE] + TARGETS, values))


def fill(storage, prefix: str = "exp") -> None:
    """One study per (method, mask), seeds phase in a `.seeds` study as dgx sweep does."""
    for (method, mask), per_seed in RESULTS.items():
        study = optuna.create_study(study_name=f"{prefix}-{method}.seeds", storage=storage, direction="maximize")
        for seed, values in enumerate(per_seed):
            add_run(study, method, mask, seed, scores(values))


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/db.sqlite3"
    fill(url)
    return url


def t_interval(values) -> tuple[float, float]:
    """Independent reference: mean and half width via scipy's t.interval."""
    arr = np.asarray(values, dtype=float)
    lo, hi = stats.t.interval(0.95, len(arr) - 1, loc=arr.mean(), scale=stats.sem(arr))
    return (lo + hi) / 2, (hi - lo) / 2


GOLDEN = """\
Table 1 — test AUROC (%), mean ± 95% CI (Student t) across seeds; phase: seeds; profile: paper; source: cxr-p-synth (dataset decoy-cxr)

| Dataset           | Method          |      AUROC | n |
|-------------------|-----------------|-----------:|--:|
| cxr-p-synth       | ERM             | 84.0 ± 2.5 | 3 |
|                   | RRR (periphery) | 83.2 ± 3.1 | 3 |
| _mimic-cxr-synth_ | ERM             | 77.0 ± 2.5 | 3 |
|                   | RRR (periphery) | 77.0 ± 5.0 | 3 |
| _chexpert-synth_  | ERM             | 81.0 ± 2.5 | 3 |
|                   | RRR (periphery) | 80.3 ± 6.3 | 3 |
| Target average    | ERM             | 79.0 ± 2.2 | 3 |
|                   | RRR (periphery) | 78.7 ± 4.7 | 3 |

_italic_ = OOD target domain; n = seeds; — = not run; n/a = not applicable.

Target average against ERM (paired t across seeds):
- RRR (periphery): -0.3 points (± 4.4, 95% CI; 3 paired seeds; p=0.774; above ERM on 1 of 3)
"""


def test_mean_ci_matches_scipy_and_edge_cases():
    values = [0.71, 0.74, 0.69, 0.80, 0.77]
    mean, half, n = mean_ci(values, confidence=0.9)
    lo, hi = stats.t.interval(0.9, 4, loc=np.mean(values), scale=stats.sem(values))
    assert n == 5 and mean == pytest.approx((lo + hi) / 2) and half == pytest.approx((hi - lo) / 2)
    assert mean_ci([0.5, float("nan"), 0.7])[2] == 2  # missing results are dropped, not zeros
    m1, h1, n1 = mean_ci([0.8])
    assert (m1, n1) == (0.8, 1) and math.isnan(h1)
    m0, _, n0 = mean_ci([])
    assert n0 == 0 and math.isnan(m0)


def test_load_runs_rows_and_order(db):
    df = load_runs(db)
    assert list(df.columns) == ["study", "trial", "dataset", "method", "mask", "phase", "seed", "domain", "role", "auroc", "run_id",
                                  "profile", "val_auroc", "lam", "val_auroc_low", "val_shuffled_auroc", "val_swapped_auroc", "draw"]
    assert len(df) == 2 * 3 * 3
    first = df[(df["study"] == "exp-erm.seeds") & (df["trial"] == 0)]
    assert list(first["domain"]) == [SOURCE] + TARGETS
    assert list(first["role"]) == ["source", "target", "target"]
    assert list(first["auroc"]) == [0.83, 0.77, 0.80]
    assert load_runs(db, study_prefix="exp-rrr")["method"].unique().tolist() == ["rrr"]


def test_cells_match_independent_scipy(db):
    cells = table1_cells(load_runs(db)).set_index(["domain", "label"])
    per_seed_erm = np.array(RESULTS[("erm", "none")])
    per_seed_rrr = np.array(RESULTS[("rrr", "periphery")])
    checks = {
        (SOURCE, "ERM"): per_seed_erm[:, 0],
        ("chexpert-synth", "RRR (periphery)"): per_seed_rrr[:, 2],
        # target average: per seed mean over both targets, then CI across seeds
        ("Target average", "RRR (periphery)"): per_seed_rrr[:, 1:].mean(axis=1),
    }
    for key, raw in checks.items():
        mean, half = t_interval(raw)
        cell = cells.loc[key]
        assert cell["mean"] == pytest.approx(mean) and cell["half_width"] == pytest.approx(half), key
        assert cell["n"] == 3
        assert fmt_cell(cell["mean"], cell["half_width"], cell["n"]) == f"{100 * mean:.1f} ± {100 * half:.1f}"
    cell = cells.loc[("Target average", "RRR (periphery)")]
    assert fmt_cell(cell["mean"], cell["half_width"], cell["n"]) == "78.7 ± 4.7"


def test_golden_markdown(db):
    assert table1(load_runs(db)) == GOLDEN
    assert report(db) == GOLDEN


def test_headline_against_scipy_and_oracle_headroom(db):
    # An oracle study: ERM trained on the decorrelated source, recorded with variant "oracle".
    oracle = optuna.create_study(study_name="exp-erm-oracle.seeds", storage=db, direction="maximize")
    oracle_targets = [(0.90, 0.88), (0.91, 0.90), (0.89, 0.92)]
    for seed, (a, b) in enumerate(oracle_targets):
        add_run(oracle, "erm", "none", seed, scores((0.95, a, b)), variant="oracle")
    runs = load_runs(db)
    assert "oracle" in set(runs["method"]) and (runs["method"] == "erm").sum() == 9  # not mixed into ERM
    text = report(db)
    assert sum("Oracle (ERM, shortcut decorrelated)" in x for x in text.splitlines()) == 4  # 3 domains + average
    erm = np.array(RESULTS[("erm", "none")])[:, 1:].mean(1)
    rrr = np.array(RESULTS[("rrr", "periphery")])[:, 1:].mean(1)
    orc = np.array(oracle_targets).mean(1)
    ref = stats.ttest_rel(rrr, erm)
    line = next(x for x in text.splitlines() if x.startswith("- RRR (periphery)"))
    assert f"{100 * (rrr - erm).mean():+.1f} points" in line
    assert f"p={ref.pvalue:.3g}" in line
    share = (rrr.mean() - erm.mean()) / (orc.mean() - erm.mean())
    assert f"recovers {100 * share:.0f}% of the oracle headroom" in line
    head = next(x for x in text.splitlines() if x.startswith("- oracle headroom"))
    assert f"{100 * (orc.mean() - erm.mean()):+.1f} points" in head


def test_missing_cells_are_shown():
    storage = optuna.storages.InMemoryStorage()
    fill(storage)
    study = optuna.create_study(study_name="gm", storage=storage, direction="maximize")
    # GradMask was never scored on chexpert: its cell and target average must be "—".
    add_run(study, "gradmask", "scaled", 0, {SOURCE: 0.8, "mimic-cxr-synth": 0.7})
    add_run(study, "gradmask", "scaled", 1, {SOURCE: 0.9, "mimic-cxr-synth": 0.75})
    text = table1(load_runs(storage))
    assert "| _chexpert-synth_  | ERM               |  81.0 ± 2.5 | 3 |" in text
    assert "|                   | GradMask (scaled) |           — | 0 |" in text
    lines = [line for line in text.splitlines() if "GradMask" in line and line.startswith("|")]
    # rows: source, mimic, chexpert, target average — none of them dropped
    assert [line.split("|")[3].strip() for line in lines] == ["85.0 ± 63.5", "72.5 ± 31.8", "—", "—"]
    assert [line.split("|")[4].strip() for line in lines] == ["2", "2", "0", "0"]
    # The average stands on fewer seeds than the mimic cell beside it, and the note says so.
    assert "target average only over seeds scored on every target, fewer than its cells for GradMask (scaled) 0 of 2" \
        in text


def test_single_seed_shows_na():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="one", storage=storage)
    add_run(study, "actdiff", "abnormality", 0, scores((0.8, 0.7, 0.6)))
    text = table1(load_runs(storage))
    assert "| cxr-p-synth       | ActDiff (abnormality) | 80.0 ± n/a | 1 |" in text
    assert "| Target average    | ActDiff (abnormality) | 65.0 ± n/a | 1 |" in text


def test_phase_filter_and_failed_trials(db):
    study = optuna.load_study(study_name="exp-erm.seeds", storage=db)
    add_run(study, "erm", "none", 7, scores((0.5, 0.5, 0.5)), phase="search")
    add_run(study, "erm", "none", 8, scores((0.1, 0.1, 0.1)), state=TrialState.FAIL)
    add_run(study, "erm", "none", 9, scores((0.1, 0.1, 0.1)), state=TrialState.PRUNED)
    assert table1(load_runs(db)) == GOLDEN  # search, FAIL and PRUNED trials are all ignored
    search = load_runs(db, phase="search")
    assert search["seed"].unique().tolist() == [7] and search["auroc"].tolist() == [0.5, 0.5, 0.5]
    assert sorted(load_runs(db, phase=None)["seed"].unique()) == [0, 1, 2, 7]


def test_non_dgx_trials_are_skipped(db):
    study = optuna.load_study(study_name="exp-erm.seeds", storage=db)
    study.add_trial(create_trial(value=0.1, params={}, distributions={}))  # no dgx attrs
    assert table1(load_runs(db)) == GOLDEN


def test_error_empty_storage():
    with pytest.raises(DgxError, match="contains no studies.*dgx sweep"):
        load_runs(optuna.storages.InMemoryStorage())


def test_error_missing_sqlite_file(tmp_path):
    path = tmp_path / "nope.sqlite3"
    with pytest.raises(DgxError, match="does not exist"):
        load_runs(f"sqlite:///{path}")
    assert not path.exists()  # we must not create a stray empty database


def test_error_unknown_prefix_lists_studies(db):
    with pytest.raises(DgxError) as err:
        load_runs(db, study_prefix="resnet")
    msg = str(err.value)
    assert "'resnet'" in msg and "exp-erm.seeds, exp-rrr.seeds" in msg


def test_error_only_search_trials():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="rrr-periphery-decoy-cxr", storage=storage)
    for seed in range(4):
        add_run(study, "rrr", "periphery", seed, scores((0.8, 0.7, 0.6)), phase="search")
    with pytest.raises(DgxError) as err:
        load_runs(storage)
    msg = str(err.value)
    assert "phase 'seeds'" in msg and "4 in phase 'search'" in msg and "--phase search" in msg
    assert "rrr-periphery-decoy-cxr" in msg


def test_error_duplicated_seeds(db):
    # A second configuration of ERM in another study reuses seed 0.
    study = optuna.create_study(study_name="other-erm.seeds", storage=db)
    add_run(study, "erm", "none", 0, scores((0.6, 0.6, 0.6)))
    with pytest.raises(DgxError) as err:
        table1(load_runs(db))
    msg = str(err.value)
    assert "ERM on decoy-cxr has 2 trials with seed 0" in msg
    assert "exp-erm.seeds#0" in msg and "other-erm.seeds#0" in msg and "study prefix" in msg
    assert table1(load_runs(db, study_prefix="exp")) == GOLDEN  # the suggested fix works


def test_error_unknown_format(db):
    with pytest.raises(DgxError, match="unknown table format 'html'; choose from: csv, json, latex, markdown"):
        table1(load_runs(db), fmt="html")


def test_holm_adjusts_by_hand_example():
    from dgx.report.tables import holm

    # m = 4: sorted p 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06 (monotone), 0.06
    assert holm(np.array([0.03, 0.01, 0.04, 0.02])).tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm(np.array([0.5])).tolist() == [0.5] and holm(np.array([0.9, 0.8])).tolist() == [1.0, 1.0]


def test_stars_are_holm_corrected_and_an_unreachable_test_is_said(db):
    text = report(db, baseline="erm")
    assert "after Holm's correction over the" in text
    cells = table1_cells(load_runs(db))
    assert "significant" not in cells  # without a baseline there is nothing to star
    wilcoxon = report(db, baseline="erm", test="wilcoxon")
    assert "with 3 paired seeds the smallest Wilcoxon p is 0.25, so no cell can be starred" in wilcoxon


def test_report_options_that_would_do_nothing_are_one_line_errors(db):
    from typer.testing import CliRunner

    from dgx.cli import app

    for args, message in ((["--test", "wilcoxon"], "there is none; add --baseline erm"),
                          (["--baseline", "erm", "--figure", "bars"], "--baseline has no effect on --figure")):
        result = CliRunner().invoke(app, ["report", "--storage", db, *args])
        assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_headroom_too_small_to_mean_anything_is_not_shared_out(db):
    """An oracle 1 point above ERM once made the headline say "recovers −633% of the oracle headroom"."""
    oracle = optuna.create_study(study_name="exp-erm-oracle.seeds", storage=db, direction="maximize")
    erm = np.array(RESULTS[("erm", "none")])
    for seed, row in enumerate(erm):
        add_run(oracle, "erm", "none", seed, scores(tuple(row + np.array([0.0, 0.01, 0.01]))), variant="oracle")
    text = report(db)
    head = next(x for x in text.splitlines() if x.startswith("- oracle headroom"))
    assert "+1.0 points" in head and "too small to share out" in head
    assert "of the oracle headroom" not in next(x for x in text.splitlines() if x.startswith("- RRR (periphery)"))


def test_headroom_rule():
    from dgx.report.headline import headroom_is_real

    assert headroom_is_real(0.30, 0.05) and not headroom_is_real(0.04, 0.01)  # below 5 points
    assert not headroom_is_real(0.08, 0.10)  # its CI reaches 0
    assert not headroom_is_real(0.08, float("nan"))  # one replicate: no CI


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_figures_are_written_in_the_format_their_suffix_names(db, tmp_path, suffix, magic):
    """--out fig.pdf and .svg once wrote PNG bytes."""
    from typer.testing import CliRunner

    from dgx.cli import app

    out = tmp_path / f"bars{suffix}"
    result = CliRunner().invoke(app, ["report", "--storage", db, "--figure", "bars", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(magic)


def test_bars_use_the_shared_palette_in_table_order(db, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import to_hex

    from dgx.plotting import SERIES
    from dgx.report.figures import bars

    captured = {}
    import matplotlib.figure

    original = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["fig"] = fig
        return original(fig, *args, **kwargs)

    matplotlib.figure.Figure.savefig = keep
    try:
        bars(load_runs(db), tmp_path / "b.png")
    finally:
        matplotlib.figure.Figure.savefig = original
    ax = captured["fig"].axes[0]
    colors = [to_hex(c.patches[0].get_facecolor()) for c in ax.containers if hasattr(c, "patches") and c.patches]
    assert colors == [SERIES[0].lower(), SERIES[1].lower()]  # ERM, then RRR: as in the ROC figure
