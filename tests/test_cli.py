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


def test_missing_file_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yaml")
    code, _, err = run_main(monkeypatch, capsys, "check", PATTERD_CONFIG=missing)
    assert code == 78
    assert err.strip() == f"$PATTERD_CONFIG={missing!r}: no such file"


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


# The fifteen network providers the seed's environment table names (contracts §2), plus the built-ins.
SEED_PROVIDERS = [
    "engine.openai_realtime",
    "engine.elevenlabs_convai",
    "stt.deepgram",
    "stt.whisper",
    "stt.cartesia",
    "stt.soniox",
    "stt.speechmatics",
    "stt.assemblyai",
    "tts.elevenlabs",
    "tts.openai",
    "tts.cartesia",
    "tts.rime",
    "tts.lmnt",
    "llm.openai",
    "llm.anthropic",
]
BUILTINS = [
    "carrier.twilio",
    "carrier.telnyx",
    "carrier.local",
    "stt.offline",
    "tts.offline",
    "vad.offline",
    "llm.script",
]


def test_providers_lists_builtins() -> None:
    proc = run_cli("providers")
    assert proc.returncode == 0
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert len(SEED_PROVIDERS) == 15
    assert set(SEED_PROVIDERS) <= listed, set(SEED_PROVIDERS) - listed
    assert set(BUILTINS) <= listed, set(BUILTINS) - listed


def test_no_config_runs_builtin_default_check(tmp_path: Path) -> None:
    proc = run_cli("check", cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0, proc.stderr
    assert "<built-in default>" in proc.stdout


def test_builtin_default_is_the_shipped_config() -> None:
    """The embedded offline default and config/patter.yaml are the same file."""
    from patterd.cli import default_config_text

    assert default_config_text() == (ROOT / "config" / "patter.yaml").read_text()


# The README's first example written literally: a Twilio number but nothing Twilio can reach.
SEED_EXAMPLE = """\
carrier: {type: twilio}
phone_number: "+15550001234"
agents:
  - name: receptionist
    engine: {type: openai_realtime, voice: alloy}
    system_prompt: You are a friendly receptionist.
"""
OFFLINE_AGENT = "agents:\n  - {name: a, stt: {type: offline}, llm: {type: script}, tts: {type: offline}}\n"


def run_main(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, **env: str
) -> tuple[int, str, str]:
    """`patterd ARGS` in this process (the exit code main returns), with only `env` of the credentials."""
    import os

    for name in list(os.environ):
        if name.startswith(("TWILIO_", "TELNYX_", "OPENAI_", "PATTER")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_carrier_nobody_can_reach_fails_check_and_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(SEED_EXAMPLE)
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != "PATTERD_PUBLIC_HOST"}
    for command in ("check", "run"):
        code, _, err = run_main(monkeypatch, capsys, command, "--config", str(config), **env)
        assert code == 78, (command, err)
        assert "webhook_url (line 1): required when carrier is twilio" in err
        assert "tunnel: true" in err
    config.write_text(SEED_EXAMPLE + "webhook_url: gw.example.com\n")
    assert run_main(monkeypatch, capsys, "check", "--config", str(config), **env)[0] == 0


def test_tunnel_without_cloudflared_fails_check_and_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text("tunnel: true\npersist: false\n" + OFFLINE_AGENT)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("check", "run"):
        code, _, err = run_main(monkeypatch, capsys, command, "--config", str(config), PATH=str(bin_dir))
        assert code == 78, (command, err)
        assert "tunnel (line 1): cloudflared binary 'cloudflared' not found" in err
        assert "apt-get install cloudflared" in err
    fake = bin_dir / "cloudflared"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    code, _, err = run_main(monkeypatch, capsys, "check", "--config", str(config), PATH=str(bin_dir))
    assert code == 0, err


def test_bad_environment_defaults_name_their_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        "PATTER_LOG_REDACT_PHONE": "xyz",
        "PATTER_LOG_RETENTION_DAYS": "-3",
        "PATTER_BIND_HOST": "0.0.0.0:80",
    }
    code, _, err = run_main(monkeypatch, capsys, "check", "--config", str(SHIPPED[0]), **env)
    assert code == 78
    assert err.strip().splitlines()[1:] == [
        "server.host: $PATTER_BIND_HOST='0.0.0.0:80' is invalid: must be an IP address or host name to "
        "listen on, without a port (like 127.0.0.1, 0.0.0.0 or ::), got '0.0.0.0:80'",
        "logging.redact_phone: $PATTER_LOG_REDACT_PHONE='xyz' is not one of full|mask|hash_only",
        "logging.retention_days: $PATTER_LOG_RETENTION_DAYS='-3' is invalid: input should be greater "
        "than or equal to 0",
    ]


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("song.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb" * 64, "an MP3 file, not a WAV"),
        ("notes.wav", b"this is not audio\n", "not a RIFF/WAVE file"),
        (
            "cut.wav",
            b"RIFF\x00\x10\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x80\x3e\x00\x00"
            b"\x02\x00\x10\x00data\x00\x10\x00\x00" + b"\x00" * 100,
            "truncated: the data chunk declares 4096 bytes but the file holds 100",
        ),
        ("missing.wav", None, "cannot read it: No such file or directory"),
    ],
)
def test_simulate_refuses_unreadable_audio_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    data: bytes | None,
    reason: str,
) -> None:
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    args = ("simulate", "--config", str(SHIPPED[0]), "--wav", str(path))
    code, out, err = run_main(monkeypatch, capsys, *args, PATTER_LOG_DIR=str(tmp_path))
    assert code == 1
    (line,) = err.splitlines()
    assert line.startswith(f"patterd simulate: {path}: {reason}"), line
    assert not out and not (tmp_path / "calls").exists()  # refused before any call started
