"""docker/: the worker image and the compose file (PostgreSQL, GPU workers, optuna-dashboard).

Most checks here are static (the files are parsed, nothing is run), so they hold on
machines without Docker: the dashboard is published on loopback only, the database
password has no default, dgx containers run as a non-root host user, images are
pinned, and the dashboard runs the workers' Optuna. `docker compose config` is run
too where a compose CLI exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
PASSWORD = "DGX_DB_PASSWORD"
USER = "${DGX_UID:-1000}:${DGX_GID:-1000}"
BUILD_ARGS = {"DGX_UID": "${DGX_UID:-1000}", "DGX_GID": "${DGX_GID:-1000}",
              "BASE": "${DGX_BASE_IMAGE:-python:3.11-slim}"}  # a locally built base where Docker Hub is unreachable


# --- helpers: a compose-style interpolator and a Dockerfile reader ------------------------------

class Missing(Exception):
    """A `${VAR:?message}` whose VAR is unset or empty: compose refuses to start."""


_SUBST = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value, env: dict[str, str]):
    """Resolve compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`, `$$`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        body = match.group(1) if match.group(1) is not None else match.group(2)
        name, op, rest = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(:?[-?]|)(.*)$", body, re.DOTALL).groups()
        current = env.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if op.endswith("-"):
            return rest if unset else current
        if op.endswith("?"):
            if unset:
                raise Missing(f"{name}: {rest}")
            return current
        return current or ""

    return _SUBST.sub(one, value)


def compose_text() -> str:
    return (DOCKER / "compose.yaml").read_text()


def compose() -> dict:
    return yaml.safe_load(compose_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def dgx_services() -> dict[str, dict]:
    """The services built from this repository's Dockerfile (workers, tools, dashboard)."""
    return {name: svc for name, svc in services().items()
            if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == "docker/Dockerfile"}


def code_lines(text: str) -> list[str]:
    """Lines that are not comments (YAML and Dockerfile both use #)."""
    return [line for line in text.splitlines() if not line.lstrip().startswith("#")]


def dockerfile_stages() -> list[dict]:
    """[{name, base, instructions: [(KEYWORD, arguments)]}] with continuation lines joined."""
    joined, pending = [], ""
    for line in code_lines((DOCKER / "Dockerfile").read_text()):
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    stages: list[dict] = []
    defaults: dict[str, str] = {}  # ARGs before the first FROM (BASE): FROM reads their defaults
    for line in joined:
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            base, _, name = args.partition(" AS ") if " AS " in args else args.partition(" as ")
            base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base.strip())
            stages.append({"name": name.strip() or None, "base": base, "instructions": []})
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede the first FROM, got {keyword}"
            key, _, value = args.partition("=")
            defaults[key] = value
        else:
            stages[-1]["instructions"].append((keyword, args))
    return stages


def stage(name: str) -> dict:
    (found,) = [s for s in dockerfile_stages() if s["name"] == name]
    return found


def dockerfile_arg(name: str) -> str:
    values = [args.partition("=")[2] for s in dockerfile_stages() for kw, args in s["instructions"]
              if kw == "ARG" and args.partition("=")[0] == name]
    assert len(values) == 1 and values[0], f"the Dockerfile must declare ARG {name}=<default> once"
    return values[0]


def dockerfile_env(name: str) -> str:
    for s in dockerfile_stages():
        for kw, args in s["instructions"]:
            if kw == "ENV":
                for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", args):
                    if key == name:
                        return value
    raise AssertionError(f"the Dockerfile sets no ENV {name}")


def split_port(port) -> tuple[str | None, str, str]:
    """(host_ip, published, target) of a short ("127.0.0.1:8080:8080") or long port entry."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port.get("published", "")), str(port["target"])
    parts = str(port).split("/")[0].split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return None, parts[0], parts[1]
    return None, "", parts[0]


# --- compose.yaml -------------------------------------------------------------------------------

def test_dashboard_is_published_on_loopback_only():
    svcs = services()
    ports = svcs["dashboard"]["ports"]
    assert ports == ["127.0.0.1:8080:8080"]
    for name, svc in svcs.items():  # nothing else is published anywhere else either (postgres: not at all)
        for port in svc.get("ports", []):
            host_ip, _, _ = split_port(port)
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond loopback"
    assert "ports" not in svcs["postgres"]
    readme = (DOCKER / "README.md").read_text()
    assert "-L 8080:127.0.0.1:8080" in readme  # how to reach it from elsewhere: an SSH tunnel


def test_db_password_is_required_and_has_no_default():
    text = compose_text()
    svcs = services()
    required = re.compile(r"\$\{DGX_DB_PASSWORD:\?[^}]*DGX_DB_PASSWORD[^}]*\}")  # the message names the variable
    # Every interpolation of a password variable is the required form.
    interpolations = re.findall(r"\$\{[^}]*\}", "\n".join(code_lines(text)))
    password_uses = [i for i in interpolations if "PASSWORD" in i.split(":")[0].split("-")[0].split("?")[0]]
    assert len(password_uses) >= 3
    assert all(required.fullmatch(i) for i in password_uses), password_uses
    for bad in ("POSTGRES_PASSWORD:-", "PASSWORD:-", "PASSWORD-", "${POSTGRES_PASSWORD", "HOST_AUTH_METHOD"):
        assert bad not in text, f"compose.yaml still has {bad!r}"
    # Every credential in a URL and every *PASSWORD key holds the required interpolation, never a literal.
    for line in code_lines(text):
        for _user, secret in re.findall(r"://([^:/@\s\"']+):(\$\{[^}]*\}|[^@\s\"']+)@", line):
            assert required.fullmatch(secret), f"literal credential in {line.strip()!r}"
        key = re.match(r"\s*-?\s*([A-Z_]*PASSWORD[A-Z_]*)\s*[:=]\s*(.*)$", line)
        if key:
            assert required.fullmatch(key.group(2).strip().strip("\"'")), line
    secret = "${DGX_DB_PASSWORD:?set DGX_DB_PASSWORD in .env (see .env.example)}"
    url = f"postgresql+psycopg2://dgx:{secret}@postgres:5432/dgx"
    assert svcs["postgres"]["environment"]["POSTGRES_PASSWORD"] == secret
    assert svcs["dashboard"]["command"] == [url]
    workers = {k: v for k, v in svcs.items() if k.startswith(("worker-", "sweep"))}
    assert len(workers) >= 4 and all(w["environment"]["DGX_STORAGE"] == url for w in workers.values())
    # Resolved as compose resolves it: no password, no start; with one, every URL carries it.
    for env in ({}, {PASSWORD: ""}):
        with pytest.raises(Missing, match=PASSWORD):
            interpolate(compose(), env)
    resolved = interpolate(compose(), {PASSWORD: "s3cret"})["services"]
    assert resolved["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cret"
    assert resolved["dashboard"]["command"] == ["postgresql+psycopg2://dgx:s3cret@postgres:5432/dgx"]
    assert resolved["worker-0"]["environment"]["DGX_STORAGE"] == "postgresql+psycopg2://dgx:s3cret@postgres:5432/dgx"
    # .env.example offers the variable empty (so a copied .env still refuses to start).
    assert f"\n{PASSWORD}=\n" in (ROOT / ".env.example").read_text()


def test_dgx_services_run_as_the_host_user():
    svcs = services()
    dgx = dgx_services()
    assert set(svcs) - set(dgx) == {"postgres"}  # postgres' own image drops to its `postgres` user
    assert {"dashboard", "worker-0", "worker-1", "sweep", "sweep-report"} <= set(dgx)
    torch_home = dockerfile_env("TORCH_HOME")
    for name, svc in dgx.items():
        assert svc["user"] == USER, name
        assert svc["build"]["args"] == BUILD_ARGS, name  # the image's user is the container's user
        assert svc["build"]["context"] == ".."
        for volume in svc.get("volumes", []):
            assert "/root" not in interpolate(volume, {}).rsplit(":", 1)[-1], f"{name} mounts into root's home"
    for name in ("worker-0", "sweep"):
        targets = [v.rsplit(":", 1)[-1] for v in svcs[name]["volumes"]]
        assert torch_home in targets and {"/data", "/runs"} <= set(targets)
    # Defaults are a non-root user; DGX_UID/DGX_GID from .env reach both the image and the container.
    default = interpolate(svcs["worker-0"], {PASSWORD: "x"})
    assert default["user"] == "1000:1000" and default["build"]["args"] == {"DGX_UID": "1000", "DGX_GID": "1000",
                                                                           "BASE": "python:3.11-slim"}
    mine = interpolate(svcs["dashboard"], {"DGX_UID": "1234", "DGX_GID": "567", PASSWORD: "x"})
    assert mine["user"] == "1234:567" and mine["build"]["args"] == {"DGX_UID": "1234", "DGX_GID": "567",
                                                                    "BASE": "python:3.11-slim"}
    example = (ROOT / ".env.example").read_text()
    assert "\nDGX_UID=" in example and "\nDGX_GID=" in example


def test_images_are_pinned():
    svcs = services()
    for name, svc in svcs.items():
        raw = svc.get("image")
        assert raw, f"{name} has no image name (an untagged build would be named ...:latest)"
        image = interpolate(raw, {})
        _, sep, tag = image.rpartition("/")[2].partition(":")
        assert sep and tag and tag != "latest", f"{name}: {raw!r} is unpinned"
        if "build" in svc:  # built here, never pulled: a local tag is enough
            assert raw.endswith(":${DGX_VERSION:-dev}"), f"{name}: {raw!r}"
    postgres = svcs["postgres"]["image"]
    assert re.fullmatch(r"postgres:16\.\d+(-[a-z]+)?", postgres), postgres  # a minor, not just the major
    for line in code_lines(compose_text()):
        assert ":latest" not in line
    for s in dockerfile_stages():
        if s["base"] in {t["name"] for t in dockerfile_stages()}:
            continue  # an earlier stage of this file
        _, sep, tag = s["base"].rpartition("/")[2].partition(":")
        assert sep and tag and tag != "latest", s["base"]


def test_dashboard_runs_the_workers_optuna():
    svcs = services()
    dashboard, worker = svcs["dashboard"], svcs["worker-0"]
    assert "ghcr.io" not in str(dashboard.get("image"))
    # The same build (Dockerfile, context, user) as the workers, another target of it.
    assert dashboard["build"]["target"] == "dashboard" and worker["build"]["target"] == "worker"
    assert {k: v for k, v in dashboard["build"].items() if k != "target"} == \
           {k: v for k, v in worker["build"].items() if k != "target"}
    stages = dockerfile_stages()
    assert stages[-1]["name"] == "worker"  # the default target of `docker build`
    base = stage("worker")["base"]
    assert stage("dashboard")["base"] == base
    base_runs = " ".join(args for kw, args in stage(base)["instructions"] if kw == "RUN")
    assert "pip install '.[postgres]'" in base_runs  # the project, so pyproject.toml's optuna pin
    # optuna-dashboard pinned, and installed under a constraint to the Optuna already there.
    version = dockerfile_arg("OPTUNA_DASHBOARD_VERSION")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    (install,) = [args for kw, args in stage("dashboard")["instructions"] if kw == "RUN"]
    assert "print('optuna==' + optuna.__version__)" in install
    pips = re.findall(r"pip install ([^&]*)", install)
    assert len(pips) == 1 and "-c /tmp/optuna-pin.txt" in pips[0]
    assert '"optuna-dashboard==${OPTUNA_DASHBOARD_VERSION}"' in pips[0]
    assert not re.search(r"(?<![\w-])optuna(?![\w-])", pips[0].replace("optuna-pin", "")), pips[0]
    # The Optuna it was checked against is inside pyproject.toml's pin: a pin moving past it means recheck.
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")  # tomli: Python 3.10
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (optuna,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "optuna"]
    text = (DOCKER / "Dockerfile").read_text()
    checked = re.search(rf"{re.escape(version)} requires optuna>=[\d.]+; checked against optuna\s+([\d.]+)",
                        " ".join(text.replace("#", " ").split()))
    assert checked, "the Dockerfile says which Optuna the pinned optuna-dashboard was checked against"
    assert Version(checked.group(1)) in optuna.specifier, (checked.group(1), str(optuna.specifier))
    entry = [args for kw, args in stage("dashboard")["instructions"] if kw == "ENTRYPOINT"]
    assert entry and "optuna-dashboard" in entry[-1]


def test_compose_config_validates(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; apt-get install docker-compose")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in (PASSWORD, "DGX_UID", "DGX_GID", "DGX_VERSION")}
    command = [*cli, "--env-file", str(empty), "-f", str(DOCKER / "compose.yaml"), "config"]
    refused = subprocess.run(command, check=False, capture_output=True, text=True, cwd=DOCKER, env=env)
    assert refused.returncode != 0 and PASSWORD in refused.stderr  # no password, no stack
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=DOCKER,
                            env={**env, PASSWORD: "test-only"})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    url = "postgresql+psycopg2://dgx:test-only@postgres:5432/dgx"
    assert services["dashboard"]["command"] == [url]  # the dashboard reads the workers' database
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "test-only"
    assert [split_port(p)[0] for p in services["dashboard"]["ports"]] == ["127.0.0.1"]
    workers = {k: v for k, v in services.items() if k.startswith("worker-")}
    assert len(workers) >= 2
    gpus = []
    for svc in workers.values():
        assert svc["environment"]["DGX_STORAGE"] == url
        assert svc["user"] == "1000:1000" and svc["image"] == "dgx-worker:dev"
        (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1
        gpus += device["device_ids"]
    assert len(set(gpus)) == len(workers)  # one GPU each


def _compose_cli() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), whichever this machine has."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], check=False,
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


# --- Dockerfile ---------------------------------------------------------------------------------

def test_dockerfile_runs_as_a_non_root_user():
    uid, gid = dockerfile_arg("DGX_UID"), dockerfile_arg("DGX_GID")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r'useradd [^\n]*--uid "\$DGX_UID" --gid "\$DGX_GID"', text)
    assert re.search(r'groupadd [^\n]*--gid "\$DGX_GID"', text)
    for s in dockerfile_stages():
        for kw, args in s["instructions"]:
            if kw == "USER":
                assert args.split(":")[0] not in ("root", "0"), f"USER {args} in stage {s['name']}"
    for target in ("worker", "dashboard"):  # the images compose runs end as the non-root user
        users = [args for kw, args in stage(target)["instructions"] if kw == "USER"]
        assert users and users[-1] == "dgx", target
    assert dockerfile_env("TORCH_HOME").startswith("/home/dgx/")
    assert dockerfile_env("HOME") == "/home/dgx"
    assert not [line for line in code_lines(text) if "/root" in line]


def test_dockerfile_copies_what_exists():
    text = (DOCKER / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    assert 'ENTRYPOINT ["dgx"]' in text and "DGX_SWEEPS_DIR" in text
