"""The command line, driven through Typer's CliRunner like a user would."""

from __future__ import annotations

import optuna
import pytest
from scipy import stats
from typer.testing import CliRunner

from dgx.cli import app
from dgx.space import load_budget
from tests.helpers import named_study, cli_data_args

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_no_args_shows_help():
    result = invoke()
    assert result.exit_code == 0
    for command in ("train", "sweep", "report"):
        assert command in result.output


def test_every_option_has_help():
    from typer.main import get_command

    group = get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"dgx {name} {param.opts[0]} has no help text"


def test_train_prints_every_domain(tmp_path):
    result = invoke("train", "rrr", "--mask", "periphery", "--epochs", "1", "--lam", "0.01", *cli_data_args())
    assert result.exit_code == 0, result.output
    for domain in ("cxr-p-synth", "mimic-cxr-synth", "chexpert-synth", "chexpert-age-synth", "chestx-ray8-synth"):
        assert domain in result.output
    assert list((tmp_path / "runs" / "runs").glob("*/result.json"))


def test_sweep_then_report_then_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # one W&B run per trial, written locally
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    args = ["sweep", "rrr", "--mask", "periphery", "--trials", "2", "--seeds", "2", "--epochs", "1",
            "--storage", url, *cli_data_args()]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "RRR (periphery)" in result.output and "Target average" in result.output
    assert "| ERM " in result.output  # the baseline study runs alongside by default

    search = named_study(url, "rrr-periphery-decoy-cxr-quick")
    seeds = named_study(url, "rrr-periphery-decoy-cxr-quick", ".seeds")
    done = [t for t in search.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2 and len({tuple(sorted(t.params.items())) for t in done}) == 2
    for t in done + seeds.trials:
        for key in ("method", "mask", "dataset", "phase", "seed", "auroc", "config", "val_auroc"):
            assert key in t.user_attrs
        assert t.user_attrs["method"] == "rrr" and t.user_attrs["mask"] == "periphery"
    assert {t.user_attrs["phase"] for t in done} == {"search"}
    assert sorted(t.params["seed"] for t in seeds.trials) == [0, 1]
    erm = named_study(url, "erm-none-decoy-cxr-quick")
    erm_seeds = named_study(url, "erm-none-decoy-cxr-quick", ".seeds")
    assert all("lam" not in t.params and t.user_attrs["method"] == "erm" for t in erm.trials + erm_seeds.trials)
    # The oracle: ERM on the same source with the decoy decorrelated (decoy_strength=0.5), same targets.
    oracle = named_study(url, "erm-none-decoy-cxr-quick", "-oracle")
    oracle_seeds = named_study(url, "erm-none-decoy-cxr-quick", "-oracle.seeds")
    for t in oracle.trials + oracle_seeds.trials:
        assert t.user_attrs["variant"] == "oracle" and t.user_attrs["method"] == "erm"
        assert t.user_attrs["config"]["data_options"]["decoy_strength"] == "0.5"
    assert "Oracle (ERM, shortcut decorrelated)" in result.output and "oracle headroom" in result.output
    assert "- RRR (periphery): " in result.output and "paired replicates" in result.output  # the paired test line
    every = done + seeds.trials + erm.trials + erm_seeds.trials + oracle.trials + oracle_seeds.trials
    offline = sorted(p.name.rsplit("-", 1)[-1] for p in (tmp_path / "runs" / "wandb").glob("offline-run-*"))
    # One W&B run per training: seed 0 of each seeds phase carries its selected search trial's run.
    assert offline == sorted({t.user_attrs["wandb_run"] for t in every})
    best = max(done, key=lambda t: t.value)
    assert all(t.params["lam"] == best.params["lam"] for t in seeds.trials)

    # The report's numbers equal an independent scipy computation over the seeds trials.
    report = invoke("report", "--storage", url)
    assert report.exit_code == 0, report.output
    values = [100 * t.user_attrs["auroc"]["mimic-cxr-synth"] for t in seeds.trials]
    mean = sum(values) / len(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    cell = f"{mean:.1f} ± {(hi - lo) / 2:.1f}"
    lines = report.output.splitlines()
    first = next(i for i, l in enumerate(lines) if "mimic-cxr-synth" in l)
    rows = [l for l in lines[first : first + 2] if "RRR (periphery)" in l]  # the domain's block: ERM, RRR
    assert rows and cell in rows[0], (cell, report.output)

    # The attribution audit reads every seeds run's selected checkpoint: one row per method and domain.
    png = tmp_path / "attribution.png"
    audit = invoke("analyze", "attribution", "--storage", url, "--max-images", "16", "--out", str(png))
    assert audit.exit_code == 0, audit.output
    for label in ("RRR (periphery)", "ERM", "Oracle (ERM, shortcut decorrelated)"):
        assert f"| {label} " in audit.output, audit.output
    assert "decoy % (area %)" in audit.output and audit.output.count("mimic-cxr-synth") == 3
    assert png.stat().st_size > 0

    # Rerunning the same command resumes: nothing new is trained.
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert len(optuna.load_study(study_name=search.study_name, storage=url).trials) == len(search.trials)
    assert len(optuna.load_study(study_name=seeds.study_name, storage=url).trials) == len(seeds.trials)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "nope"], "unknown method 'nope'; choose from: actdiff, erm, gradmask, rrr"),
        (["train", "rrr", "--mask", "lungs"], "unknown mask 'lungs'; choose from: abnormality, gaze, none, periphery, scaled"),
        (["sweep", "rrr", "--data", "mnist"], "unknown dataset 'mnist'; choose from: cxr-p, cxr-p-full, decoy-cxr"),
        (["train", "rrr", "--lam", "-0.5"], "--lam must be a non-negative number"),
        (["train", "rrr", "--lam", "abc"], "Invalid value for '--lam'"),
        (["train", "rrr", "--weights", "missing.pt"], "weights file missing.pt does not exist"),
        (["sweep", "rrr", "--storage", "sqlite:////proc/no/such/dir/dgx.db"], "pass --storage or set DGX_STORAGE"),
        (["train", "rrr", "--data-opt", "colour=red"], "unknown decoy-cxr option 'colour'"),
        (["train", "rrr", "--budget", "huge"], "unknown budget 'huge'; choose from: gpu, mnist, paper, quick"),
        (["report", "--storage", "sqlite:///nothing-here.db"], "does not exist"),
        (["sweep", "rrr", "--sampler", "cmaes"], "unknown sampler 'cmaes'; choose from: grid, random, tpe"),
        (["sweep", "rrr", "--pruner", "sometimes"], "unknown pruner 'sometimes'; choose from: asha, hyperband, median, none"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_missing_imagenet_weights_say_how_to_supply_them(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    import torchvision

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    result = invoke("train", "erm", "--weights", "imagenet", "--model", "resnet18")
    assert result.exit_code == 2
    assert "resnet18-f37072fd.pth" in result.output and "--weights none" in result.output


def test_sweep_and_report_on_a_journal_file_storage(tmp_path):
    url = f"journal:///{tmp_path / 'studies.journal'}"
    result = invoke("sweep", "gradmask", "--mask", "scaled", "--trials", "1", "--seeds", "2", "--epochs", "1",
                    "--no-baseline", "--storage", url, *cli_data_args())
    assert result.exit_code == 0, result.output
    assert "GradMask (scaled)" in result.output and "| ERM" not in result.output
    report = invoke("report", "--storage", url)
    assert report.exit_code == 0, report.output
    assert "GradMask (scaled)" in report.output and "| 2 |" in report.output
    # Search and seeds trials share seed 0, and seed 0 of the seeds phase is the selected search run:
    # --phase all counts it once (n = 2, not 3), and --phase search shows the selected point.
    both = invoke("report", "--storage", url, "--phase", "all")
    assert both.exit_code == 0 and "| 2 |" in both.output and "| 3 |" not in both.output, both.output
    search = invoke("report", "--storage", url, "--phase", "search")
    assert search.exit_code == 0 and "| 1 |" in search.output, search.output


@pytest.mark.parametrize("sampler, pruner", [("random", "median"), ("tpe", "hyperband")])
def test_sweep_with_other_samplers_and_pruners(tmp_path, sampler, pruner):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    result = invoke("sweep", "rrr", "--mask", "abnormality", "--sampler", sampler, "--pruner", pruner,
                    "--trials", "4", "--seeds", "1", "--epochs", "2", "--no-baseline", "--storage", url,
                    *cli_data_args())
    assert result.exit_code == 0, result.output
    study = named_study(url, "rrr-abnormality-decoy-cxr-quick")
    finished = [t for t in study.trials if t.state.is_finished()]
    grid = load_budget("quick").grid_for("rrr")
    assert len(finished) == min(4, len(grid["lam"]) * len(grid["lr"]) * len(grid["wd"]))  # --trials caps the grid
    # every trial reported its source-val AUROC per epoch (cached reruns of a point too), so pruners can act
    assert all(len(t.intermediate_values) >= 1 for t in finished)
    assert all(t.params["lam"] in set(grid["lam"]) for t in finished)


def test_official_profile_trains_sweeps_and_reports_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    data = [a if a != "32" else "64" for a in cli_data_args()]  # per-sample batch norm needs 2x2 maps in layer4
    result = invoke("train", "rrr", "--mask", "abnormality", "--epochs", "1", "--profile", "official", *data)
    assert result.exit_code == 0, result.output
    assert "official profile" in result.output and "val accuracy" in result.output
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    result = invoke("sweep", "actdiff", "--mask", "periphery", "--trials", "1", "--seeds", "1", "--epochs", "1",
                    "--no-oracle", "--profile", "official", "--storage", url, *data)
    assert result.exit_code == 0, result.output
    assert "profile official" in result.output and "redrawn 80/20 per seed" in result.output
    assert "profile: official" in result.output  # the report's title
    study = named_study(url, "actdiff-periphery-decoy-cxr-quick-official", ".seeds")
    assert study.trials[0].user_attrs["config"]["profile"] == "official"
    erm = named_study(url, "erm-none-decoy-cxr-quick-official")
    assert erm.trials[0].user_attrs["config"]["profile"] == "official"  # the baseline trains the same way
    bad = invoke("train", "rrr", "--profile", "released", *data)
    assert bad.exit_code == 2 and "unknown profile 'released'" in bad.output


def test_the_command_line_starts_without_heavy_libraries():
    """`dgx --help` must stay fast: importing dgx.cli may not load torch, optuna, pandas or matplotlib."""
    import subprocess
    import sys

    code = ("import sys, dgx.cli; heavy = [m for m in ('torch', 'optuna', 'pandas', 'matplotlib', 'sklearn') "
            "if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing dgx.cli loaded {out}"
    version = invoke("--version")
    assert version.exit_code == 0 and version.output.startswith("dgx ")
    assert "--install-completion" in invoke("--help").output


@pytest.mark.parametrize("env,message", [
    ({"DGX_HEARTBEAT_S": "abc"}, "setting DGX_HEARTBEAT_S='abc'"),
    ({"WANDB_MODE": "bogus"}, "setting WANDB_MODE='bogus'"),
])
def test_a_bad_setting_is_one_line_and_exit_2(env, message, monkeypatch):
    from dgx.config import get_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    result = invoke("report")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dotenv_reaches_every_setting_and_a_broken_one_is_one_line(tmp_path, monkeypatch):
    from dgx.config import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DGX_REFERENCE_DIR", raising=False)
    monkeypatch.delenv("DGX_LUNG_MODEL", raising=False)
    (tmp_path / ".env").write_text("DGX_REFERENCE_DIR=/some/reference\nDGX_LUNG_MODEL=/w/pspnet.pth\n")
    get_settings.cache_clear()
    from dgx.analyze import default_reference_dir
    from dgx.prep.lungseg import default_weights

    assert str(default_reference_dir()) == "/some/reference" and str(default_weights()) == "/w/pspnet.pth"
    (tmp_path / ".env").write_bytes(b"DGX_STORAGE=\xff\xfe\n")
    get_settings.cache_clear()
    result = invoke("report")
    assert result.exit_code == 2 and "not UTF-8" in result.output and len(result.output.strip().splitlines()) == 1
    get_settings.cache_clear()


def test_storage_passwords_never_reach_the_log():
    from dgx.storage import shown_url

    assert shown_url("postgresql://dgx:s3cret@db:5432/dgx") == "postgresql://dgx:***@db:5432/dgx"
    assert shown_url("sqlite:///runs/dgx.db") == "sqlite:///runs/dgx.db"
    assert shown_url("postgresql://root@127.0.0.1/test") == "postgresql://root@127.0.0.1/test"
    result = invoke("report", "--storage", "postgresql://dgx:s3cret@127.0.0.1:1/nope")
    assert result.exit_code == 2 and "s3cret" not in result.output


def test_wandb_source_without_a_key_says_how_to_fix_it(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    result = invoke("report", "--source", "wandb", "--project", "dgx")
    assert result.exit_code == 2 and "needs a W&B API key" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_env_example_lists_every_setting():
    from pathlib import Path

    from dgx.config import Settings

    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias.choices[0]
        assert f"\n{variable}=" in example, f"{variable} ({name}) is missing from .env.example"


def test_the_seeds_phase_is_never_pruned(tmp_path):
    """Optuna's default pruner (median, 5 startup trials) must not stop seeds 5 and up."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    result = invoke("sweep", "erm", "--trials", "1", "--seeds", "7", "--epochs", "2", "--no-baseline",
                    "--storage", url, *cli_data_args())
    assert result.exit_code == 0, result.output
    seeds = named_study(url, "erm-none-decoy-cxr-quick", ".seeds").trials
    assert len(seeds) == 7 and {t.state for t in seeds} == {optuna.trial.TrialState.COMPLETE}
