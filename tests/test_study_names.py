"""Study names carry the settings a flag changed from the budget (an ``-oHASH`` tag), so a smoke test with
``--epochs 1`` never shares a study with the plain command, and ``dgx report`` without ``--study`` reports the
plain (untagged) studies and says which tags it left out. Before the tag, the plain command after a smoke
test failed with "study … already exists with other settings", and a plain report with "mixed configurations"."""

from __future__ import annotations

import optuna
from typer.testing import CliRunner

from dgx.cli import app
from dgx.runs import OVERRIDDEN
from dgx.resolve import resolve_config
from dgx.spec import TrainRequest
from dgx.sweep.plan import overrides, study_name
from tests.test_report import add_run, scores


def _cfg(**flags):
    options = dict(model=None, weights=None, image_size=None, epochs=None, batch_size=16)
    data_opt = flags.pop("data_opt", None)
    options.update(flags)
    return resolve_config(TrainRequest(method="rrr", mask="periphery", data="decoy-cxr", data_opts=tuple(data_opt or ()), budget="quick", **options))


def test_a_flag_that_changes_a_setting_tags_the_study():
    plain, budget = _cfg()
    assert overrides(plain, budget) == {} and study_name(plain, budget) == "rrr-periphery-decoy-cxr-quick"
    smoke, _ = _cfg(epochs=1, image_size=32)
    assert overrides(smoke, budget) == {"epochs": 1, "image_size": 32}
    name = study_name(smoke, budget)
    assert OVERRIDDEN.search(name) and name.startswith("rrr-periphery-decoy-cxr-quick-o")
    assert study_name(_cfg(epochs=1, image_size=32)[0], budget) == name  # the same flags, the same study
    assert study_name(_cfg(epochs=1)[0], budget) != name  # other flags, another study
    drawn, _ = _cfg(data_opt=["seed=7"])
    assert OVERRIDDEN.search(study_name(drawn, budget))  # a data option is a setting too
    same, _ = _cfg(epochs=2)  # the budget's own value is no override
    assert study_name(same, budget) == "rrr-periphery-decoy-cxr-quick"
    assert not OVERRIDDEN.search("erm-none-decoy-cxr-quick-oracle.seeds")  # "-oracle" is not a tag


def test_report_without_study_reports_the_default_studies_and_names_the_others(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    for name, value in (("rrr-periphery-decoy-cxr-quick.seeds", 0.7), ("rrr-periphery-decoy-cxr-quick-oabc123.seeds", 0.6),
                        ("erm-none-decoy-cxr-quick-oabc123.seeds", 0.5)):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        for seed in range(2):
            add_run(study, name.split("-")[0], name.split("-")[1], seed, scores((value, value, value)),
                    config={"lr": 1e-4, "epochs": 1 if "-o" in name else 2})
    result = CliRunner().invoke(app, ["report", "--storage", url])
    assert result.exit_code == 0, result.output
    assert "70.0" in result.stdout and "60.0" not in result.stdout  # the plain study only
    assert "abc123" in result.stderr and "--study oabc123" in result.stderr  # and how to report the others
    tagged = CliRunner().invoke(app, ["report", "--storage", url, "--study", "oabc123"])
    assert tagged.exit_code == 0, tagged.output
    assert "60.0" in tagged.stdout and "50.0" in tagged.stdout and "70.0" not in tagged.stdout
