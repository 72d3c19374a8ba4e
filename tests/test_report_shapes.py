"""The paper's table shapes (1, 2/5, 3), paired statistics, output formats, per-run intervals and the W&B source."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import optuna
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from dgx.cli import app
from dgx.errors import DgxError
from dgx.report import load_runs, report
from dgx.report.render import render
from dgx.stats import _placements, bootstrap_ci, delong_ci, paired_difference
from dgx.report.tables import AVERAGE, Baseline, build, cells
from dgx.report.wandb_source import load_wandb_runs
from tests.test_report import SOURCE, TARGETS, add_run, scores

# (method, mask) -> per-seed (source, mimic, chexpert) AUROC; seeded so each table cell is known.
rng = np.random.default_rng(7)
GROUPS = [("erm", "none"), ("actdiff", "abnormality"), ("actdiff", "scaled"), ("actdiff", "periphery"),
          ("rrr", "abnormality"), ("rrr", "scaled"), ("rrr", "periphery")]
RESULTS = {g: [tuple(np.round(0.6 + 0.3 * rng.random(3), 3)) for _ in range(4)] for g in GROUPS}


@pytest.fixture
def storage():
    st = optuna.storages.InMemoryStorage()
    for method, mask in GROUPS:
        study = optuna.create_study(study_name=f"t-{method}-{mask}.seeds", storage=st, direction="maximize")
        for seed, values in enumerate(RESULTS[(method, mask)]):
            add_run(study, method, mask, seed, scores(values))
    return st


def _values(group, column):
    return np.array([v[column] for v in RESULTS[group]])


def test_table2_shape_golden_cells(storage):
    (t,) = build(load_runs(storage), "2")
    assert t.header == ["Segmentation type", SOURCE, *TARGETS, AVERAGE]
    assert [r[0] for r in t.rows] == ["Abnormality", "Scaled abnormality", "Lung periphery"]
    for row, mask in zip(t.rows, ("abnormality", "scaled", "periphery")):
        for col, domain_index in ((1, 0), (2, 1), (3, 2)):
            v = _values(("actdiff", mask), domain_index)
            lo, hi = stats.t.interval(0.95, 3, loc=v.mean(), scale=stats.sem(v))
            assert row[col] == f"{100 * v.mean():.1f} ± {100 * (hi - lo) / 2:.1f} (4)"
        avg = np.array(RESULTS[("actdiff", mask)])[:, 1:].mean(axis=1)
        assert row[4].startswith(f"{100 * avg.mean():.1f} ± ")
    text = render([t], "markdown")
    header = [h.strip() for h in text.splitlines()[2].strip("|").split("|")]
    assert header == ["Segmentation type", SOURCE, *(f"_{t}_" for t in TARGETS), AVERAGE]  # targets marked
    (t5,) = build(load_runs(storage), "5")
    assert t5.title.startswith("Table 5: RRR")


def test_table3_gain_is_periphery_minus_abnormality(storage):
    (t,) = build(load_runs(storage), "3")
    assert t.header == ["Dataset", "Method", "AUROC", "n", "Gain"]
    labels = {r[1] for r in t.rows}
    assert labels == {"ERM", "ActDiff (periphery)", "RRR (periphery)"}  # abnormality rows are the reference only
    data = t.data.set_index(["domain", "method"])
    for method in ("actdiff", "rrr"):
        for i, domain in enumerate([SOURCE, *TARGETS]):
            gain = _values((method, "periphery"), i).mean() - _values((method, "abnormality"), i).mean()
            assert data.loc[(domain, method), "gain"] == pytest.approx(gain)
    erm_rows = [r for r in t.rows if r[1] == "ERM"]
    assert erm_rows and all(r[4] == "n/a" for r in erm_rows)  # ERM has no mask: not applicable, not "not run"
    assert "— = not run; n/a = not applicable" in t.note


def test_paired_statistics_match_scipy(storage):
    runs = load_runs(storage)
    c = cells(runs, baseline=Baseline.parse("erm")).set_index(["domain", "method", "mask"])
    a, b = _values(("rrr", "periphery"), 1), _values(("erm", "none"), 1)
    row = c.loc[("mimic-cxr-synth", "rrr", "periphery")]
    d = a - b
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert row["diff"] == pytest.approx(d.mean()) and row["diff_half"] == pytest.approx((hi - lo) / 2)
    assert row["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert row["significant"] == (row["p"] < 0.05)
    w = paired_difference(a, b, test="wilcoxon")
    assert w[3] == pytest.approx(stats.wilcoxon(a - b).pvalue)
    # Against a reference mask: same method, abnormality masks.
    c2 = cells(runs, baseline=Baseline.parse("mask:abnormality")).set_index(["domain", "method", "mask"])
    ref = _values(("actdiff", "abnormality"), 0)
    assert c2.loc[(SOURCE, "actdiff", "scaled"), "p"] == pytest.approx(
        stats.ttest_rel(_values(("actdiff", "scaled"), 0), ref).pvalue)
    assert pd.isna(c2.loc[(SOURCE, "actdiff", "abnormality")].get("diff"))  # no self-comparison
    text = report(storage, baseline="erm")
    assert "Δ vs ERM" in text and "(p=" in text


def test_significant_cells_are_marked():
    st = optuna.storages.InMemoryStorage()
    for method, mask, shift in (("erm", "none", 0.0), ("rrr", "periphery", 0.05)):
        study = optuna.create_study(study_name=f"s-{method}", storage=st)
        for seed in range(5):
            base = 0.70 + 0.01 * seed
            add_run(study, method, mask, seed, scores((base + shift, base + shift, base + shift + 0.001 * seed)))
    text = report(st, baseline="erm")
    rrr = [line for line in text.splitlines() if line.startswith("|") and "RRR" in line]
    assert rrr and all("*" in line for line in rrr)  # +5 points on every seed: p << 0.05
    assert "- RRR (periphery): +5.0 points" in text and "p<0.001" in text  # the headline under the table


def _parse_markdown(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip().strip("_") for c in r.strip("|").split("|")] for r in rows[2:]]


def _parse_latex(text: str) -> list[list[str]]:
    body = text.split(r"\midrule")[1].split(r"\bottomrule")[0]
    out = []
    for line in body.strip().splitlines():
        cells_ = [c.strip() for c in re.split(r"(?<!\\)&", line.strip().removesuffix(r"\\"))]
        cells_ = [re.sub(r"\\underline\{(.*)\}", r"\1", c).replace(r"$\pm$", "±").replace("---", "—")
                  .replace(r"\_", "_").replace(r"\%", "%").replace(r"$\Delta$", "Δ") for c in cells_]
        out.append(cells_)
    return out


@pytest.mark.parametrize("shape", ["1", "2", "3"])
def test_markdown_latex_csv_json_round_trips(storage, shape):
    tables = build(load_runs(storage), shape, baseline=Baseline.parse("erm"))
    for t in tables:
        assert _parse_markdown(render([t], "markdown")) == [[c for c in r] for r in t.rows]
        assert _parse_latex(render([t], "latex")) == t.rows
    csv = pd.read_csv(io.StringIO(render(tables, "csv")))
    data = pd.concat([t.data for t in tables], ignore_index=True)
    assert np.allclose(csv["mean"], data["mean"]) and list(csv["domain"]) == list(data["domain"])
    js = json.loads(render(tables, "json"))
    assert js["tables"][0]["rows"] == tables[0].rows and len(js["cells"]) == len(data)


def test_missing_cell_in_wide_table():
    st = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="m", storage=st)
    for seed in range(2):
        add_run(study, "actdiff", "abnormality", seed, scores((0.8, 0.7, 0.6)))
        add_run(study, "actdiff", "periphery", seed, {SOURCE: 0.8, TARGETS[0]: 0.7})  # never scored on chexpert
    (t,) = build(load_runs(st), "2")
    scaled, periphery = t.rows[1], t.rows[2]
    assert scaled[0] == "Scaled abnormality" and scaled[1:] == ["—"] * 4  # not run, still a row
    assert periphery[0] == "Lung periphery" and periphery[3] == "—" and periphery[4] == "—"


def test_shape_errors_are_clear(storage):
    runs = load_runs(storage)
    (t,) = build(runs, "2", method="gradmask")  # none run: every paper mask a row of "—", and a note
    assert [r[0] for r in t.rows] == ["Abnormality", "Scaled abnormality", "Lung periphery"]
    assert all(cell == "—" for r in t.rows for cell in r[1:]) and "no GradMask runs on decoy-cxr" in t.note
    with pytest.raises(DgxError, match="unknown method 'bogus'"):
        build(runs, "2", method="bogus")
    with pytest.raises(DgxError, match="Table 3 needs methods trained with the periphery mask"):
        build(runs[runs["mask"] != "periphery"], "3")
    with pytest.raises(DgxError, match="unknown table '4'"):
        build(runs, "4")
    with pytest.raises(DgxError, match="--baseline"):
        Baseline.parse("best")


def test_delong_and_bootstrap_against_independent_computations():
    r = np.random.default_rng(0)
    labels = np.r_[np.ones(60), np.zeros(140)].astype(int)
    scores_ = np.round(r.normal(labels * 0.8, 1.0), 1)  # rounding makes ties
    v10, v01 = _placements(labels, scores_)
    pos, neg = scores_[labels == 1], scores_[labels == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # brute-force kernel
    assert np.allclose(v10, psi.mean(axis=1)) and np.allclose(v01, psi.mean(axis=0))
    auc, low, high = delong_ci(labels, scores_)
    assert auc == pytest.approx(roc_auc_score(labels, scores_))
    var = psi.mean(axis=1).var(ddof=1) / len(pos) + psi.mean(axis=0).var(ddof=1) / len(neg)
    assert high - low == pytest.approx(2 * stats.norm.ppf(0.975) * np.sqrt(var))
    b_auc, b_low, b_high = bootstrap_ci(labels, scores_, n_boot=1000)
    assert b_auc == pytest.approx(auc) and b_low < auc < b_high
    assert abs((b_high - b_low) - (high - low)) < 0.35 * (high - low)  # two estimates of one width


class FakeRun:
    """A stand-in for wandb.apis.public.Run: no W&B server is reachable here, so the W&B source is
    tested at the wandb.Api boundary with runs carrying exactly what dgx's WandbRun writes."""

    def __init__(self, study, number, attrs):
        self.group, self.job_type, self.name, self.state = study, attrs["phase"], f"{study}#{number}", "finished"
        self.config = {"method": attrs["method"], "mask": attrs["mask"], "dataset": attrs["dataset"],
                       "seed": attrs["seed"], "lr": 1e-4}
        self.summary = {f"auroc/{k}": v for k, v in attrs["auroc"].items()}
        self.summary.update(source=attrs["source"], targets=attrs["targets"], **{"val/auroc": 0.9})


class FakeApi:
    """Pages of 3 runs; the first page request is rate-limited once (HTTP 429)."""

    def __init__(self, runs):
        self._runs, self.calls, self.limited = runs, [], False

    def runs(self, path, filters=None, per_page=50):
        self.calls.append((path, dict(filters or {})))
        api = self

        class Pages:
            def __iter__(self):
                for start in range(0, len(api._runs), 3):
                    if start == 3 and not api.limited:
                        api.limited = True
                        raise RuntimeError("HTTP 429: rate limit exceeded")
                    yield from api._runs[start:start + 3]

        return _Resumable(Pages())


class _Resumable:
    """Like the W&B paginator: an exception on a page fetch can be retried by calling next() again."""

    def __init__(self, pages):
        self._pages = pages
        self._items = None
        self._done = []

    def __iter__(self):
        return self

    def __next__(self):
        if self._items is None:
            self._items = iter(self._pages)
        try:
            item = next(self._items)
        except RuntimeError:
            self._items = iter(self._pages)  # re-request: skip what was delivered
            for _ in self._done:
                next(self._items)
            raise
        self._done.append(item)
        return item


def test_wandb_source_gives_identical_tables(storage):
    fakes = []
    for name in sorted(optuna.get_all_study_names(storage)):
        for t in optuna.load_study(study_name=name, storage=storage).trials:
            fakes.append(FakeRun(name, t.number, t.user_attrs))
    api = FakeApi(fakes[::-1])  # W&B returns newest first: order must not matter
    sleeps = []
    wb = load_wandb_runs("team", "dgx", api=api, sleep=sleeps.append)
    assert api.limited and sleeps == [1.0]  # one rate-limited page, retried after 1 s
    assert api.calls[0] == ("team/dgx", {"state": "finished", "jobType": {"$in": ["seeds", "search"]}})
    opt = load_runs(storage)
    for shape in ("1", "2", "3", "5"):
        assert render(build(wb, shape, baseline=Baseline.parse("erm")), "markdown") == \
            render(build(opt, shape, baseline=Baseline.parse("erm")), "markdown")
    with pytest.raises(DgxError, match="no finished dgx runs in W&B project team/dgx"):
        load_wandb_runs("team", "dgx", study_prefix="zzz", api=FakeApi(fakes), sleep=lambda s: None)


def test_wandb_source_counts_the_reused_search_run_as_seed_zero():
    """Seed 0 of a seeds phase reuses the selected search training, which W&B holds once, as a search run."""
    def run(study, number, seed, lr, values, phase):
        fake = FakeRun(study, number, {"phase": phase, "method": "rrr", "mask": "periphery", "dataset": "decoy-cxr",
                                       "seed": seed, "auroc": scores(values), "source": SOURCE, "targets": TARGETS})
        fake.config["lr"] = lr
        return fake

    fakes = [run("g", 0, 0, 1e-4, (0.7, 0.6, 0.6), "search"), run("g", 1, 0, 1e-3, (0.8, 0.7, 0.7), "search"),
             run("g.seeds", 1, 1, 1e-3, (0.81, 0.71, 0.72), "seeds"), run("g.seeds", 2, 2, 1e-3, (0.79, 0.7, 0.7), "seeds")]
    wb = load_wandb_runs("team", "dgx", api=FakeApi(fakes), sleep=lambda s: None)
    seeds = wb.drop_duplicates(["study", "trial"]).set_index("seed")
    assert sorted(seeds.index) == [0, 1, 2] and set(seeds["phase"]) == {"seeds"}
    assert (seeds.loc[0, "study"], seeds.loc[0, "trial"]) == ("g", 1)  # the search trial it is
    zero = wb[(wb["seed"] == 0) & (wb["domain"] == SOURCE)]
    assert zero["auroc"].tolist() == [0.8]  # the search run with the seeds' config (lr 1e-3), not the other point


def test_reproduce_dry_run_lists_the_paper_trial_count():
    result = CliRunner().invoke(app, ["reproduce", "all", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "1,201" in result.stdout  # 264 (Table 1) + 236 (2) + 236 (5) + 465 (3), shared studies once
    one = CliRunner().invoke(app, ["reproduce", "table1", "--dry-run"])
    assert "│    264 │" in one.stdout or " 264 " in one.stdout
    bad = CliRunner().invoke(app, ["reproduce", "table4"])
    assert bad.exit_code == 2 and "unknown paper experiment 'table4'" in bad.stderr


@pytest.mark.slow
def test_reproduce_on_decoy_then_report_everything(tmp_path):
    """A real rehearsal: Table 2's three ActDiff studies on decoy-cxr, then every report output."""
    from tests.helpers import cli_data_args

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    runner = CliRunner()
    args = ["reproduce", "table2", "--data", "decoy-cxr", "--budget", "quick", "--trials", "1", "--seeds", "2",
            "--epochs", "1", "--storage", url]
    extra = [a for a in cli_data_args() if a not in ("--model", "resnet18-w16", "--weights", "none")]
    result = runner.invoke(app, [*args, *extra, "--model", "resnet18-w16", "--weights", "none"])
    assert result.exit_code == 0, result.output
    assert "Table 2: ActDiff by segmentation type" in result.stdout
    assert "Lung periphery" in result.stdout and "Scaled abnormality" in result.stdout
    out = tmp_path / "t2.tex"
    r = runner.invoke(app, ["report", "--storage", url, "--table", "2", "--method", "actdiff", "--format", "latex",
                            "--out", str(out), "--baseline", "mask:abnormality"])
    assert r.exit_code == 0 and out.read_text().count(r"\\") >= 4
    r = runner.invoke(app, ["report", "--storage", url, "--run-ci", "delong"])
    assert r.exit_code == 0 and "DeLong" in r.stdout and "[" in r.stdout, r.output
    for fig in ("bars", "roc"):
        png = tmp_path / f"{fig}.png"
        r = runner.invoke(app, ["report", "--storage", url, "--figure", fig, "--out", str(png)])
        assert r.exit_code == 0 and png.read_bytes()[:4] == b"\x89PNG", r.output
    r = runner.invoke(app, ["report", "--storage", url, "--study", "nope"])
    assert r.exit_code == 2 and "no study name starts with 'nope'" in r.stderr


def test_reproduce_with_a_pruner_says_what_it_saved_and_warns(tmp_path):
    from tests.helpers import cli_data_args

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    extra = [a for a in cli_data_args() if a not in ("--model", "resnet18-w16", "--weights", "none")]
    result = CliRunner().invoke(app, ["reproduce", "table2", "--data", "decoy-cxr", "--budget", "quick", "--trials", "2",
                                      "--seeds", "1", "--epochs", "2", "--storage", url, "--pruner", "asha", *extra,
                                      "--model", "resnet18-w16", "--weights", "none"])
    assert result.exit_code == 0, result.output
    saved = [line for line in result.output.splitlines() if "search trained" in line]
    assert len(saved) == 3 and all("of 4 epochs" in line for line in saved), result.output  # 2 points x 2 epochs
    assert "seeds phase is never pruned" in result.output
    bad = CliRunner().invoke(app, ["reproduce", "table2", "--pruner", "sometimes", "--dry-run"])
    assert bad.exit_code == 2 and "unknown pruner 'sometimes'" in bad.output
