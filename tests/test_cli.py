"""The command line: exit codes and output of check, providers, schema, version (contracts §1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from patterd import __version__
from patterd.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "config" / "patter.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]
EXAMPLE_ENV = {
    "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
    "TWILIO_AUTH_TOKEN": "test-token",
    "TELNYX_API_KEY": "KEYtest",
    "TELNYX_CONNECTION_ID": "1234567890",
    "TELNYX_PUBLIC_KEY": "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=",
    "OPENAI_API_KEY": "sk-test",
    "PATTERD_PUBLIC_HOST": "gw.example.com",
}

FIVE_MISTAKES = """\
carrier:
  type: twilio
  account_sid: AC0123456789abcdef0123456789abcdef
phone_number: "555-0100"
server:
  prot: 9000
agents:
  - name: receptionist
    stt: {type: offline, endpointing_ms: soon}
    llm: {type: scrip}
    tts: {type: offline}
"""


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "TELNYX_", "OPENAI_", "PATTER"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "patterd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        cwd=cwd,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"patterd {__version__}"
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0


def test_usage_error_exits_2() -> None:
    assert run_cli("frobnicate").returncode == 2


def test_check_reports_every_mistake_with_lines(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(FIVE_MISTAKES)
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    expected = [
        "carrier (line 1): Twilio carrier requires account_sid and auth_token",
        "phone_number (line 4):",
        "server.prot (line 6): unknown key; did you mean port?",
        "agents[0].stt.endpointing_ms (line 9):",
        "agents[0].llm.type (line 10): unknown llm type 'scrip'; did you mean 'script'?",
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), (want, lines)


def test_check_warns_about_the_contract_example_voice(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(
        "carrier: {type: local}\n"
        "agents:\n"
        "  - name: receptionist\n"
        "    engine: {type: openai_realtime, voice: nova, model: gpt-realtime, api_key: sk-x}\n"
    )
    proc = run_cli("check", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "warning: agents[0].engine: voice 'nova' is not a Realtime voice" in proc.stdout
    assert "sk-x" not in proc.stdout + proc.stderr


def test_check_missing_file_exits_78(tmp_path: Path) -> None:
    proc = run_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 78
    assert "no such file" in proc.stderr


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_check_ok(path: Path) -> None:
    proc = run_cli("check", "--config", str(path), env=EXAMPLE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout


def test_secrets_never_printed(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(
        FIVE_MISTAKES.replace("account_sid: AC", "auth_token: super-secret-value\n  account_sid: AC")
    )
    proc = run_cli("check", "--config", str(config))
    assert "super-secret-value" not in proc.stdout + proc.stderr


def test_schema_is_valid_and_accepts_shipped_configs(tmp_path: Path) -> None:
    proc = run_cli("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in SHIPPED:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path.name, [e.message for e in errors])
    assert list(validator.iter_errors({"agents": [], "bogus": 1}))


def test_committed_schema_is_current() -> None:
    """config/patter.schema.json (used by the YAML language server) matches `patterd schema`."""
    proc = run_cli("schema")
    committed = (ROOT / "config" / "patter.schema.json").read_text()
    assert json.loads(committed) == json.loads(proc.stdout), "run: patterd schema > config/patter.schema.json"


def test_shipped_config_has_language_server_hint() -> None:
    for path in SHIPPED:
        assert "yaml-language-server: $schema=" in path.read_text().splitlines()[0], path


def test_providers_lists_builtins() -> None:
    proc = run_cli("providers")
    assert proc.returncode == 0
    assert "carrier.twilio" in proc.stdout and "engine.openai_realtime" in proc.stdout


def test_no_config_runs_builtin_default_check(tmp_path: Path) -> None:
    proc = run_cli("check", cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0, proc.stderr
    assert "<built-in default>" in proc.stdout


def test_builtin_default_is_the_shipped_config() -> None:
    """The embedded offline default and config/patter.yaml are the same file."""
    from patterd.cli import default_config_text

    assert default_config_text() == (ROOT / "config" / "patter.yaml").read_text()
