"""docker/: the worker image and the compose file (PostgreSQL, GPU workers, optuna-dashboard)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), whichever this machine has."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_validates():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; apt-get install docker-compose")
    result = subprocess.run([*cli, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                            cwd=DOCKER)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    url = "postgresql+psycopg2://dgx:dgx@postgres:5432/dgx"
    assert services["dashboard"]["command"] == [url]  # the dashboard reads the workers' database
    workers = {k: v for k, v in services.items() if k.startswith("worker-")}
    assert len(workers) >= 2
    gpus = []
    for name, svc in workers.items():
        assert svc["environment"]["DGX_STORAGE"] == url
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        gpus += device["device_ids"]
    assert len(set(gpus)) == len(workers)  # one GPU each


def test_dockerfile_copies_what_exists():
    text = (DOCKER / "Dockerfile").read_text()
    root = DOCKER.parent
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (root / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    assert 'ENTRYPOINT ["dgx"]' in text and "DGX_SWEEPS_DIR" in text
