"""Tests for the deployment files: systemd units, Dockerfile, docker-compose.yml, .env.example."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "systemd" / "patterd.service"
SOCKET = ROOT / "systemd" / "patterd.socket"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
CONFIG_PATH = "/etc/patterd/patter.yaml"


def unit(path: Path) -> configparser.ConfigParser:
    # Units repeat keys (SystemCallFilter=, Environment=); strict=False keeps the last one.
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def unit_values(path: Path, section: str, key: str) -> list[str]:
    """Every value of a repeated key, which configparser would collapse."""
    values, current = [], ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.startswith(f"{key}="):
            values.append(line.split("=", 1)[1])
    return values


def test_service_is_notify_and_runs_the_config() -> None:
    service = unit(SERVICE)["Service"]
    assert service["Type"] == "notify"
    assert service["RestartPreventExitStatus"] == "78"
    assert service["Restart"] == "on-failure"
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("patterd")
    assert exec_start[1:] == ["--config", CONFIG_PATH]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM"
    stop = int(service["TimeoutStopSec"].removesuffix("s"))
    assert stop > 30, "must outlast server.drain_timeout_secs (30 s)"


def test_service_runs_as_a_dedicated_user_with_state() -> None:
    service = unit(SERVICE)["Service"]
    assert service["User"] == "patterd"
    assert service["StateDirectory"] == "patterd"
    assert "PATTER_LOG_DIR=/var/lib/patterd" in unit_values(SERVICE, "Service", "Environment")


def test_service_is_hardened() -> None:
    service = unit(SERVICE)["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert "@system-service" in unit_values(SERVICE, "Service", "SystemCallFilter")


def test_socket_activates_the_service() -> None:
    socket = unit(SOCKET)
    assert socket["Socket"]["ListenStream"] == "8000"
    assert socket["Socket"]["Service"] == "patterd.service"
    assert socket["Install"]["WantedBy"] == "sockets.target"
    assert "LISTEN_FDS" in SERVICE.read_text()  # the service documents how it gets the socket


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart exists; stand in an executable that surely does.
    stand_in = shutil.which("patterd") or shutil.which("true")
    assert stand_in is not None
    (tmp_path / "patterd.service").write_text(SERVICE.read_text().replace("/usr/local/bin/patterd", stand_in))
    shutil.copy(SOCKET, tmp_path / "patterd.socket")
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "patterd.service"), str(tmp_path / "patterd.socket")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_runs_the_repo_image_with_config_and_records() -> None:
    data = compose()
    service = data["services"]["patterd"]
    assert service["build"] == "."
    assert "./config:/etc/patterd:ro" in service["volumes"]
    records = [v for v in service["volumes"] if v.endswith(":/var/lib/patterd")]
    assert records == ["patterd-records:/var/lib/patterd"]
    assert "patterd-records" in data["volumes"]
    assert "8000:8000" in service["ports"]
    grace = int(str(service["stop_grace_period"]).removesuffix("s"))
    assert grace > 30


def test_compose_binds_everywhere_with_a_required_token() -> None:
    environment = compose()["services"]["patterd"]["environment"]
    assert environment["PATTER_BIND_HOST"] == "0.0.0.0"
    # `:?` makes compose refuse to start without a token instead of running an open dashboard.
    assert re.fullmatch(r"\$\{PATTERD_TOKEN:\?[^}]+\}", environment["PATTERD_TOKEN"])


def test_compose_env_file_is_optional() -> None:
    env_files = compose()["services"]["patterd"]["env_file"]
    assert env_files == [{"path": ".env", "required": False}]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            steps.append((instruction.upper(), rest.strip()))
    return steps


def test_dockerfile() -> None:
    steps = dockerfile()
    assert steps[0][0] == "FROM" and re.match(r"python:3\.1\d-slim", steps[0][1])
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    (health,) = [args for instruction, args in steps if instruction == "HEALTHCHECK"]
    assert "/healthz" in health and "curl" not in health
    assert any(instruction == "EXPOSE" and args == "8000" for instruction, args in steps)
    assert any(instruction == "COPY" and args.endswith(CONFIG_PATH) for instruction, args in steps)
    cmd = [args for instruction, args in steps if instruction == "CMD"][-1]
    assert CONFIG_PATH in cmd
    env = " ".join(args for instruction, args in steps if instruction == "ENV")
    assert "PATTER_LOG_DIR=/var/lib/patterd" in env
    assert any(instruction == "VOLUME" and "/var/lib/patterd" in args for instruction, args in steps)
    assert any("espeak-ng" in args for instruction, args in steps if instruction == "RUN")


def test_dockerignore_keeps_secrets_out_and_the_build_inputs_in() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored
    for needed in ("pyproject.toml", "README.md", "patterd", "config"):
        assert needed not in ignored


def test_env_example_documents_the_credentials() -> None:
    text = (ROOT / ".env.example").read_text()
    for name in (
        "PATTERD_TOKEN",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TELNYX_API_KEY",
        "OPENAI_API_KEY",
    ):
        assert re.search(rf"^#?{name}=", text, re.M), name


def test_docker_compose_config(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "PATTERD_TOKEN": "test-token"},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
