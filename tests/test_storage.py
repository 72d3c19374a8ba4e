"""Study storages: the embedded SQLite default, Journal files, and a real PostgreSQL server.

The PostgreSQL test talks to the server at $DGX_TEST_POSTGRES (default
postgresql+psycopg2://postgres@127.0.0.1:5432/test, the one CI runs) and is
skipped, with the reason, where none answers.
"""

from __future__ import annotations

import os
import uuid

import optuna
import pytest
from typer.testing import CliRunner

from dgx.cli import app
from dgx.errors import DgxError
from dgx.storage import open_storage
from tests.helpers import cli_data_args

POSTGRES = os.environ.get("DGX_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _postgres_or_skip() -> str:
    try:
        import sqlalchemy as sa

        # 15 s: a server that is there but slow to answer on a busy machine must not skip the tests (an absent
        # one refuses the connection at once)
        with sa.create_engine(POSTGRES, connect_args={"connect_timeout": 15}).connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        pytest.skip(f"no PostgreSQL server at {POSTGRES}: {type(exc).__name__}")
    return POSTGRES


def test_sweep_and_report_against_real_postgres():
    url = _postgres_or_skip()
    name = f"dgx-test-{uuid.uuid4().hex[:8]}"
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["sweep", "rrr", "--mask", "periphery", "--trials", "2", "--seeds", "2",
                                     "--epochs", "1", "--no-baseline", "--storage", url, "--study", name,
                                     *cli_data_args()])
        assert result.exit_code == 0, result.output
        search = optuna.load_study(study_name=name, storage=url)
        assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in search.trials) == 2
        report = runner.invoke(app, ["report", "--storage", url, "--study", name])
        assert report.exit_code == 0 and "RRR (periphery)" in report.output and "| 2 |" in report.output
    finally:
        for study in (name, f"{name}.seeds"):
            try:
                optuna.delete_study(study_name=study, storage=url)
            except KeyError:
                pass


def test_journal_and_sqlite_storages_open_and_bad_urls_fail_clearly(tmp_path):
    assert isinstance(open_storage(f"journal:///{tmp_path / 'a' / 'j.journal'}"), optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path / 'b' / 'x.db'}"), optuna.storages.RDBStorage)
    with pytest.raises(DgxError, match="is not a URL"):
        open_storage("runs/dgx.db")
    with pytest.raises(DgxError, match="cannot open storage"):
        open_storage("postgresql+psycopg2://nobody@127.0.0.1:1/none")
