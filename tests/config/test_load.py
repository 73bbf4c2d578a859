"""load_config / load_config_text: .env, environment, line numbers, every issue at once, no secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from patterd.config import Config, ProviderSection, load_config, load_config_text
from patterd.errors import ConfigError
from patterd.plugins import load_registry
from tests.config.specs import DeepgramOptions, TwilioOptions, make_registry

PIPELINE = "{name: a, stt: {type: offline}, llm: {type: script}, tts: {type: offline}}"
TWILIO = """\
carrier:
  type: twilio
  account_sid: ${SID}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - {name: a, stt: {type: offline}, llm: {type: script}, tts: {type: offline}}
"""


def errors_of(text: str, **environ: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, make_registry(), environ={"HOME": "/h", **environ})
    return [str(issue) for issue in info.value.issues]


def test_unknown_key_message_from_the_issue() -> None:
    text = "\n".join(
        [
            "agents:",  # 1
            "  - name: first",  # 2
            "    stt: {type: offline}",  # 3
            "    llm: {type: script}",  # 4
            "    tts: {type: offline}",  # 5
            "  - name: second",  # 6
            "    system_prompt: >",  # 7
            "      Be brief.",  # 8
            "    stt:",  # 9
            "      type: deepgram",  # 10
            "    llm: {type: script}",  # 11
            "    tts:",  # 12
            "      type: elevenlabs",  # 13
            "      voice_idd: rachel",  # 14
        ]
    )
    assert errors_of(text) == ["agents[1].tts.voice_idd (line 14): unknown key; did you mean voice_id?"]


def test_unknown_provider_type_points_at_the_type_line() -> None:
    text = "agents:\n  - name: a\n    stt: {type: offline}\n    llm: {type: script}\n    tts:\n      type: elevenlab\n"
    assert errors_of(text) == [
        "agents[0].tts.type (line 6): unknown tts type 'elevenlab'; did you mean 'elevenlabs'?"
    ]


def test_missing_required_option_points_at_its_section() -> None:
    text = f"tunnel:\n  type: static\nagents:\n  - {PIPELINE}\n"
    assert errors_of(text) == ["tunnel.hostname (line 1): required key is missing"]


def test_twilio_message_is_carried_unchanged() -> None:
    assert errors_of(TWILIO) == [
        "carrier (line 1): Twilio carrier requires account_sid and auth_token; missing auth_token: "
        "set auth_token in the config or TWILIO_AUTH_TOKEN in the environment",
        "carrier.account_sid (line 3): environment variable SID is not set",
    ]
    assert errors_of(TWILIO, SID="AC1") == [
        "carrier (line 1): Twilio carrier requires account_sid and auth_token; missing auth_token: "
        "set auth_token in the config or TWILIO_AUTH_TOKEN in the environment"
    ]
    assert errors_of(TWILIO, SID="AC1", TWILIO_AUTH_TOKEN=" ") == errors_of(TWILIO, SID="AC1")


def test_credentials_fall_back_to_the_given_environment() -> None:
    config = load_config_text(TWILIO, make_registry(), environ={"SID": "AC1", "TWILIO_AUTH_TOKEN": "tok"})
    options = config.carrier.options
    assert isinstance(options, TwilioOptions)
    assert options.auth_token is not None and options.auth_token.get_secret_value() == "tok"
    assert "TWILIO_AUTH_TOKEN" not in os.environ  # the overlay is undone


def test_dotenv_beside_the_file_is_loaded_without_overriding(tmp_path: Path) -> None:
    (tmp_path / "patter.yaml").write_text(TWILIO)
    (tmp_path / ".env").write_text("export SID=AC-from-dotenv\nTWILIO_AUTH_TOKEN='dotenv-token'\nPORT=1\n")
    config = load_config(tmp_path / "patter.yaml", make_registry(), environ={"SID": "AC-from-env"})
    assert isinstance(config.carrier.options, TwilioOptions)
    assert config.carrier.options.account_sid == "AC-from-env"  # the environment wins
    token = config.carrier.options.auth_token
    assert token is not None and token.get_secret_value() == "dotenv-token"  # credential fallback via .env
    assert config.source == (tmp_path / "patter.yaml").absolute()
    assert "TWILIO_AUTH_TOKEN" not in os.environ


def test_process_environment_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SID", "AC-process")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "process-token")
    (tmp_path / "patter.yaml").write_text(TWILIO)
    config = load_config(tmp_path / "patter.yaml", make_registry())
    assert isinstance(config.carrier.options, TwilioOptions)
    assert config.carrier.options.account_sid == "AC-process"


def test_dotenv_problems_are_reported_with_the_config_issues(tmp_path: Path) -> None:
    (tmp_path / "patter.yaml").write_text("agents: []\n")
    (tmp_path / ".env").write_text("GOOD=1\nbad line\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "patter.yaml", make_registry(), environ={})
    assert [str(i) for i in info.value.issues] == [
        ".env (line 2): expected KEY=VALUE, got 'bad line'",
        "agents (line 1): expected a list of one or more agents, got an empty list",
    ]
    assert info.value.source == str(tmp_path / "patter.yaml")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", make_registry(), environ={})


def test_every_issue_is_reported_in_file_order() -> None:
    text = "\n".join(
        [
            "phone_number: '12'",
            "server: {port: 70000}",
            "logging: {level: loud}",
            "agents:",
            "  - name: a",
            "    stt: {type: deepgram, endpointing_ms: 1}",
            "    llm: {type: script}",
            "    tts: {type: offline}",
            "    tools: [{type: transfer_call, numbers: []}]",
        ]
    )
    issues = errors_of(text)
    assert [i.split(" (line ")[0] for i in issues] == [
        "phone_number",
        "server.port",
        "logging.level",
        "agents[0].stt.endpointing_ms",
        "agents[0].tools[0].numbers",
    ]
    assert [int(i.split("(line ")[1].split(")")[0]) for i in issues] == [1, 2, 3, 6, 9]


def test_an_unset_variable_is_reported_once_not_twice() -> None:
    text = f"server:\n  port: ${{PORT}}\nagents:\n  - {PIPELINE}\n"
    assert errors_of(text) == ["server.port (line 2): environment variable PORT is not set"]


def test_secret_values_are_never_echoed() -> None:
    text = "\n".join(
        [
            "server: {host: 0.0.0.0, dashboard_token: [hunter2-token]}",
            "agents:",
            "  - name: a",
            "    stt: {type: deepgram, api_key: 987654321}",
            "    llm: {type: script}",
            "    tts: {type: offline}",
        ]
    )
    message = "\n".join(errors_of(text))
    assert "agents[0].stt.api_key (line 4): Input should be a valid string" in message
    assert "987654321" not in message and "hunter2" not in message


def test_secret_names_stay_masked_in_repr() -> None:
    config = load_config_text(
        f"server: {{dashboard_token: tok-123}}\nagents:\n  - {PIPELINE}\n", make_registry(), environ={}
    )
    assert "tok-123" not in repr(config) and "tok-123" not in str(config.to_public_dict())


def test_sections_are_typed_provider_sections() -> None:
    text = "agents:\n  - name: a\n    stt: {type: deepgram, endpointing_ms: 80}\n    llm: {type: script}\n    tts: {type: offline}\n"
    config = load_config_text(text, make_registry(), environ={})
    stt = config.agents[0].stt
    assert isinstance(stt, ProviderSection)
    assert (stt.kind, stt.type, stt.key, stt.line) == ("stt", "deepgram", "stt.deepgram", 3)
    assert isinstance(stt.options, DeepgramOptions) and stt.options.endpointing_ms == 80
    assert stt.spec.options is DeepgramOptions
    assert config.carrier.type == "local"  # omitted carrier → the browser softphone
    assert config.agents[0].is_pipeline and set(config.agents[0].sections()) == {"stt", "llm", "tts"}


def test_digest_tracks_the_interpolated_text() -> None:
    text = f"server:\n  port: ${{PORT:-8000}}\nagents:\n  - {PIPELINE}\n"
    registry = make_registry()
    a = load_config_text(text, registry, environ={})
    b = load_config_text(text, registry, environ={})
    c = load_config_text(text, registry, environ={"PORT": "9000"})
    assert a.digest == b.digest != c.digest
    assert len(a.digest) == 64 and int(a.digest, 16) >= 0


def test_persist_path_in_the_file_is_relative_to_the_file(tmp_path: Path) -> None:
    text = f"persist: records\nagents:\n  - {PIPELINE}\n"
    config = load_config_text(text, make_registry(), base_dir=tmp_path, environ={})
    assert config.persist == tmp_path / "records"


def test_dashboard_token_rule_is_checked_even_when_server_has_other_errors() -> None:
    text = f"server: {{host: 10.0.0.1, port: nope}}\nagents:\n  - {PIPELINE}\n"
    issues = errors_of(text)
    assert any("server.dashboard_token is required when server.host is not loopback" in i for i in issues)
    assert any(i.startswith("server.port (line 1)") for i in issues)


def test_bind_host_from_environment_needs_a_token_too() -> None:
    issues = errors_of(f"agents:\n  - {PIPELINE}\n", PATTER_BIND_HOST="0.0.0.0")
    assert issues == [  # the host is not in the file: the variable is named instead of a line
        "server: server.dashboard_token is required when server.host is not loopback "
        "(host is '0.0.0.0' from $PATTER_BIND_HOST and the dashboard is on)"
    ]
    issues = errors_of(f"server: {{port: 80}}\nagents:\n  - {PIPELINE}\n", PATTER_BIND_HOST="0.0.0.0")
    assert issues == [
        "server (line 1): server.dashboard_token is required when server.host is not loopback "
        "(host is '0.0.0.0' from $PATTER_BIND_HOST and the dashboard is on)"
    ]


def test_public_host_without_dashboard_needs_no_token() -> None:
    config = load_config_text(
        f"server: {{host: '::', dashboard: false}}\nagents:\n  - {PIPELINE}\n", make_registry(), environ={}
    )
    assert config.server.host == "::"


@pytest.mark.parametrize(
    ("value", "host", "scheme"),
    [
        ("abc.example.com", "abc.example.com", "https"),
        ("abc.example.com:8443", "abc.example.com:8443", "https"),
        ("https://abc.example.com/", "abc.example.com", "https"),
        ("HTTP://127.0.0.1:8000", "127.0.0.1:8000", "http"),
        ("http://[::1]:8000", "[::1]:8000", "http"),
        ("", None, "https"),
    ],
)
def test_webhook_url_forms(value: str, host: str | None, scheme: str) -> None:
    text = f"webhook_url: '{value}'\nagents:\n  - {PIPELINE}\n"
    config = load_config_text(text, make_registry(), environ={})
    assert (config.public_host, config.public_scheme) == (host, scheme)


@pytest.mark.parametrize(
    "value", ["abc.example.com/voice", "ws://abc.example.com", "abc.example.com:99999", "a b"]
)
def test_bad_webhook_urls(value: str) -> None:
    (issue,) = errors_of(f"webhook_url: '{value}'\nagents:\n  - {PIPELINE}\n")
    assert issue.startswith("webhook_url (line 1): ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("false", None),
        ("true", "tunnel.cloudflared"),
        ("cloudflared", "tunnel.cloudflared"),
        ("{type: static, hostname: h.example.com}", "tunnel.static"),
    ],
)
def test_tunnel_forms(value: str, expected: str | None) -> None:
    config = load_config_text(f"tunnel: {value}\nagents:\n  - {PIPELINE}\n", make_registry(), environ={})
    assert (config.tunnel.key if config.tunnel else None) == expected


def test_agent_lookup_helpers() -> None:
    text = f"agents:\n  - {PIPELINE}\n  - {{name: b, phone_number: '+15550002222', stt: {{type: offline}}, llm: {{type: script}}, tts: {{type: offline}}}}\n"
    config = load_config_text(text, make_registry(), environ={})
    assert isinstance(config, Config)
    assert config.agent("b").phone_number == "+15550002222"
    assert config.agent_for_number("+15550002222").name == "b"
    assert config.agent_for_number("+19990000000").name == "a"
    with pytest.raises(KeyError, match="no agent named 'zzz'; known: a, b"):
        config.agent("zzz")


def test_extension_keys_hold_anchors_and_are_ignored() -> None:
    text = "x-common: &p {stt: {type: offline}, llm: {type: script}, tts: {type: offline}}\nagents:\n  - {name: a, <<: *p}\n"
    assert load_config_text(text, make_registry(), environ={}).agents[0].name == "a"


def test_config_is_frozen() -> None:
    config = load_config_text(f"agents:\n  - {PIPELINE}\n", make_registry(), environ={})
    with pytest.raises(Exception, match="frozen"):
        config.agents[0].name = "b"  # type: ignore[misc]


def test_a_missing_default_carrier_is_explained() -> None:
    registry = make_registry()
    del registry.specs["carrier.local"]
    with pytest.raises(ConfigError) as info:
        load_config_text(f"agents:\n  - {PIPELINE}\n", registry, environ={})
    (issue,) = info.value.issues
    assert str(issue).startswith(
        "carrier (line 1): no carrier is configured and no installed carrier is a default one"
    )


def test_secret_typed_fields_are_never_echoed_whatever_their_name() -> None:
    from pydantic import Field, SecretStr

    from patterd.providers.spec import ProviderOptions, ProviderSpec

    class Vault(ProviderOptions):
        credentials: SecretStr = Field(min_length=40)

    registry = make_registry()
    registry.add(
        ProviderSpec(
            kind="tts", name="vault", options=Vault, build=registry.get("tts", "offline").build, summary="v"
        )
    )
    text = "agents:\n  - {name: a, stt: {type: offline}, llm: {type: script}, tts: {type: vault, credentials: pw-1234}}\n"
    with pytest.raises(ConfigError) as info:
        load_config_text(text, registry, environ={})
    assert "pw-1234" not in str(info.value)
    assert "agents[0].tts.credentials (line 2): " in str(info.value)


# ------------------------------------------------------------------ with the real providers


def real_errors(text: str, **environ: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, load_registry(), environ={"HOME": "/h", **environ})
    return [str(issue) for issue in info.value.issues]


def test_cloudflared_must_be_installed_for_check_and_start(tmp_path: Path) -> None:
    text = f"tunnel: true\npersist: false\nagents:\n  - {PIPELINE}\n"
    (issue,) = real_errors(text, PATH=str(tmp_path))
    assert issue.startswith("tunnel (line 1): cloudflared binary 'cloudflared' not found or not executable;")
    assert "apt-get install cloudflared" in issue and "binary: /path/to/cloudflared" in issue
    # a named binary that is not executable is no better
    fake = tmp_path / "bin" / "cloudflared"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    named = f"agents:\n  - {PIPELINE}\ntunnel: {{type: cloudflared, binary: {fake}}}\n"
    (issue,) = real_errors(named)
    assert issue.startswith(f"tunnel (line 3): cloudflared binary '{fake}' not found")
    fake.chmod(0o755)
    assert load_config_text(named, load_registry(), environ={"HOME": "/h"}).tunnel is not None
    on_path = load_config_text(text, load_registry(), environ={"HOME": "/h", "PATH": str(fake.parent)})
    assert on_path.tunnel is not None and on_path.tunnel.type == "cloudflared"


def test_real_carriers_name_the_missing_credential() -> None:
    twilio = 'carrier: {type: twilio}\nphone_number: "+15550001234"\nwebhook_url: gw.example.com\n'
    twilio += f"agents:\n  - {PIPELINE}\n"
    assert real_errors(twilio, TWILIO_AUTH_TOKEN="tok") == [
        "carrier (line 1): Twilio carrier requires account_sid and auth_token; missing account_sid: "
        "set account_sid in the config or TWILIO_ACCOUNT_SID in the environment"
    ]
    telnyx = twilio.replace("twilio", "telnyx")
    assert real_errors(telnyx, TELNYX_CONNECTION_ID="123") == [
        "carrier (line 1): Telnyx carrier requires api_key and connection_id; missing api_key: "
        "set api_key in the config or TELNYX_API_KEY in the environment"
    ]


def test_twilio_without_webhook_url_or_tunnel_fails_check() -> None:
    text = 'carrier:\n  type: twilio\nphone_number: "+15550001234"\n' + f"agents:\n  - {PIPELINE}\n"
    env = {"TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef", "TWILIO_AUTH_TOKEN": "tok"}
    (issue,) = real_errors(text, **env)
    assert issue.startswith("webhook_url (line 2): required when carrier is twilio")
    config = load_config_text(
        text + "webhook_url: gw.example.com\n", load_registry(), environ={"HOME": "/h", **env}
    )
    assert config.public_host == "gw.example.com"


def test_persist_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    a_file = tmp_path / "records"
    a_file.write_text("")
    assert errors_of(f"agents:\n  - {PIPELINE}\n", PATTER_LOG_DIR=str(a_file)) == [
        f"persist: $PATTER_LOG_DIR={str(a_file)!r}: {str(a_file)!r} exists and is not a directory; "
        "call records need a directory"
    ]
    assert errors_of(f"agents:\n  - {PIPELINE}\npersist: {a_file}\n") == [
        f"persist (line 3): {str(a_file)!r} exists and is not a directory; call records need a directory"
    ]
