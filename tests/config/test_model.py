"""The section models on their own: defaults, environment defaults, validation rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from patterd.config import AgentConfig, EndCallTool, LoggingConfig, ServerConfig, WebhookTool
from patterd.config.model import is_loopback, pipeline_problem


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_server_defaults() -> None:
    server = ServerConfig()
    assert (
        server.host,
        server.port,
        server.dashboard,
        server.dashboard_token,
        server.drain_timeout_secs,
    ) == ("127.0.0.1", 8000, True, None, 30)
    assert not server.needs_token


def test_server_host_from_environment() -> None:
    env = {"PATTER_BIND_HOST": "0.0.0.0"}
    assert ServerConfig.model_validate({}, context={"environ": env}).needs_token
    assert ServerConfig.model_validate({"host": "::1"}, context={"environ": env}).host == "::1"


def test_empty_dashboard_token_means_none() -> None:
    assert ServerConfig.model_validate({"dashboard_token": ""}).dashboard_token is None


def test_logging_defaults_from_environment() -> None:
    env = {"PATTER_LOG_REDACT_PHONE": "hash_only", "PATTER_LOG_RETENTION_DAYS": "0"}
    logging = LoggingConfig.model_validate({"level": "WARNING"}, context={"environ": env})
    assert (logging.level, logging.redact_phone, logging.retention_days) == ("warning", "hash_only", 0)
    explicit = LoggingConfig.model_validate({"redact_phone": "mask"}, context={"environ": env})
    assert explicit.redact_phone == "mask"


def test_logging_rejects_unknown_redaction() -> None:
    with pytest.raises(ValidationError):
        LoggingConfig.model_validate({"redact_phone": "partial"})


@pytest.mark.parametrize(
    ("present", "problem"),
    [
        ({"engine"}, None),
        ({"engine", "vad"}, None),
        ({"stt", "llm", "tts"}, None),
        ({"stt", "llm", "tts", "vad"}, None),
        ({"engine", "tts"}, "not both"),
        (set(), "needs either engine"),
        ({"vad"}, "needs either engine"),
        ({"stt", "tts"}, "missing: llm"),
    ],
)
def test_pipeline_problem(present: set[str], problem: str | None) -> None:
    result = pipeline_problem(present)
    assert (result is None) if problem is None else (result is not None and problem in result)


def test_agent_built_in_code_enforces_engine_or_pipeline() -> None:
    with pytest.raises(ValidationError, match="needs either engine"):
        AgentConfig(name="a")


def test_agent_name_and_variables() -> None:
    data: dict[str, Any] = {"name": "bad name"}
    with pytest.raises(ValidationError, match="String should match pattern"):
        AgentConfig.model_validate(data, context={"pipeline_checked": True})
    agent = AgentConfig.model_validate(
        {"name": "a", "variables": {"floor": 3, "open": True}}, context={"pipeline_checked": True}
    )
    assert agent.variables == {"floor": "3", "open": "True"}


def test_webhook_tool_defaults_and_rules() -> None:
    tool = WebhookTool(type="webhook", name="lookup", url="https://x.example.com/hook")
    assert tool.parameters == {"type": "object", "properties": {}}
    assert (tool.timeout_secs, tool.headers, tool.description) == (5, {}, "")
    with pytest.raises(ValidationError, match="must be a JSON Schema object"):
        WebhookTool(type="webhook", name="x", url="https://x.example.com", parameters={"type": "string"})
    with pytest.raises(ValidationError, match="http:// or https://"):
        WebhookTool(type="webhook", name="x", url="x.example.com")


def test_tools_are_a_discriminated_union() -> None:
    agent = AgentConfig.model_validate(
        {
            "name": "a",
            "tools": [{"type": "end_call"}, {"type": "transfer_call", "numbers": ["+15550001234"]}],
        },
        context={"pipeline_checked": True},
    )
    assert isinstance(agent.tools[0], EndCallTool)
    assert agent.tools[1].type == "transfer_call"
    assert agent.to_public_dict()["tools"][1] == {"type": "transfer_call", "numbers": ["+15550001234"]}


def test_webhook_headers_are_masked_in_public_output() -> None:
    agent = AgentConfig.model_validate(
        {
            "name": "a",
            "tools": [
                {
                    "type": "webhook",
                    "name": "t",
                    "url": "https://x.example.com",
                    "headers": {"Authorization": "Bearer s3cret"},
                }
            ],
        },
        context={"pipeline_checked": True},
    )
    assert "s3cret" not in str(agent.to_public_dict())
    assert agent.to_public_dict()["tools"][0]["headers"] == {"Authorization": "**********"}


def test_webhook_url_credentials_are_masked_in_public_output_and_errors() -> None:
    url = "https://ops:s3cret@x.example.com/hook?api_key=k3y&region=eu"
    agent = AgentConfig.model_validate(
        {"name": "a", "tools": [{"type": "webhook", "name": "t", "url": url}]},
        context={"pipeline_checked": True},
    )
    public = agent.to_public_dict()["tools"][0]
    assert public["url"] == "https://***@x.example.com/hook?api_key=***&region=eu"
    with pytest.raises(ValidationError) as bad:
        WebhookTool(type="webhook", name="x", url="ftp://ops:s3cret@x.example.com/?token=k3y")
    message = bad.value.errors()[0]["msg"]  # what `patterd check` prints (it never prints the input)
    assert "ftp://***@x.example.com/?token=***" in message and "s3cret" not in message


def test_webhook_safety_defaults_and_allowed_hosts() -> None:
    tool = WebhookTool(type="webhook", name="t", url="https://api.example.com/x")
    assert (tool.max_response_bytes, tool.follow_redirects, tool.allowed_hosts) == (65536, False, [])
    ok = WebhookTool(
        type="webhook", name="t", url="https://API.example.com:8443/x", allowed_hosts=["*.example.com"]
    )
    assert ok.allowed_hosts == ["*.example.com"]
    with pytest.raises(
        ValidationError, match=r"url 'https://evil.test/x' is not on allowed_hosts \(\*\.example\.com\)"
    ):
        WebhookTool(type="webhook", name="t", url="https://evil.test/x", allowed_hosts=["*.example.com"])
    with pytest.raises(ValidationError, match="is not on allowed_hosts"):  # *.example.com is subdomains only
        WebhookTool(type="webhook", name="t", url="https://example.com/x", allowed_hosts=["*.example.com"])
    with pytest.raises(ValidationError, match="less than or equal to 16777216"):
        WebhookTool(type="webhook", name="t", url="https://a.example.com", max_response_bytes=1 << 30)
