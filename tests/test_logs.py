"""Tests for patterd.logs: output format, TTY detection, redaction, contextvars, stdlib routing."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from patterd import hash_key, logs
from patterd.logs import Redactor, configure_logging
from patterd.redact import RedactMode, redact_number


class TTYStream(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logs._handler = None
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger("patterd.test").info("started", port=8000)
    (line,) = lines(out)
    assert line["event"] == "started"
    assert line["port"] == 8000
    assert line["level"] == "info"
    assert line["logger"] == "patterd.test"
    assert line["timestamp"].endswith("Z") and "T" in line["timestamp"]


def test_human_output_in_a_tty() -> None:
    out = TTYStream()
    configure_logging(stream=out)
    structlog.get_logger().info("started", port=8000)
    text = out.getvalue()
    assert "started" in text and "port" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_json_can_be_forced_in_a_tty() -> None:
    out = TTYStream()
    configure_logging(stream=out, json=True)
    structlog.get_logger().info("started")
    assert lines(out)[0]["event"] == "started"


def test_level_filters_structlog_and_stdlib() -> None:
    out = io.StringIO()
    configure_logging("warning", stream=out)
    structlog.get_logger().info("quiet")
    logging.getLogger("aiohttp.access").info("quiet too")
    structlog.get_logger().warning("loud")
    logging.getLogger("hypercorn.error").error("also loud")
    assert [line["event"] for line in lines(out)] == ["loud", "also loud"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match=r"logging\.level is 'loud'"):
        configure_logging("loud")


def test_stdlib_records_share_the_format() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.contextvars.bind_contextvars(call_id="c-1")
    logging.getLogger("hypercorn.error").info("Running on %s", "http://127.0.0.1:8000")
    (line,) = lines(out)
    assert line["event"] == "Running on http://127.0.0.1:8000"
    assert line["logger"] == "hypercorn.error"
    assert line["call_id"] == "c-1"
    assert line["timestamp"].endswith("Z")


def test_contextvars_are_merged() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    log = structlog.get_logger()
    with structlog.contextvars.bound_contextvars(call_id="CA123", agent="receptionist"):
        log.info("turn")
    log.info("after")
    first, second = lines(out)
    assert (first["call_id"], first["agent"]) == ("CA123", "receptionist")
    assert "call_id" not in second


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    structlog.get_logger().info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1


def test_secrets_are_masked() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger().info(
        "request Authorization: Bearer sk-live-123 and Basic dXNlcjpwYXNz",
        auth_token="abc",
        dashboard_token=SecretStr("t0k"),
        Authorization="Bearer xyz",
        password="hunter2",
        openai_api_key="sk-1",
        client_secret=None,
        options={"api_key": "sk-2", "nested": [SecretStr("s")]},
        input_tokens=42,
    )
    (line,) = lines(out)
    text = json.dumps(line)
    for secret in ("sk-live-123", "dXNlcjpwYXNz", "abc", "t0k", "xyz", "hunter2", "sk-1", "sk-2"):
        assert secret not in text, secret
    assert line["auth_token"] == line["password"] == line["Authorization"] == logs.MASK
    assert line["options"] == {"api_key": logs.MASK, "nested": [logs.MASK]}
    assert line["event"] == f"request Authorization: Bearer {logs.MASK} and Basic {logs.MASK}"
    assert line["client_secret"] is None
    assert line["input_tokens"] == 42  # counts are not secrets


def test_secrets_in_tracebacks_are_masked() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        raise RuntimeError("refused Bearer sk-live-9")
    except RuntimeError:
        structlog.get_logger().exception("failed")
    (line,) = lines(out)
    assert "RuntimeError" in line["exception"]
    assert "sk-live-9" not in line["exception"]


NUMBER = "+15550001234"
HASHED = "<keyed hash>"  # resolved at test time: the key is the one in use then (see patterd.hash_key)


def hashed(number: str = NUMBER) -> str:
    """hash_only's value: HMAC-SHA256 under the current key, first 16 hex digits."""
    return "sha256:" + hmac.new(hash_key.current_key(), number.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("full", NUMBER), ("mask", "***1234"), ("hash_only", HASHED)],
)
def test_numbers_are_redacted_per_mode(mode: RedactMode, expected: str) -> None:
    expected = hashed() if expected == HASHED else expected
    out = io.StringIO()
    configure_logging(stream=out, redact_phone=mode)
    structlog.get_logger().info(
        f"call from {NUMBER} to +442071838750",
        caller=NUMBER,
        callee="+1 555 000 1234",
        to=NUMBER,
        detail={"from": NUMBER},
        numbers=[NUMBER],
    )
    logging.getLogger("aiohttp.client").info("dialing %s", NUMBER)
    line, stdlib = lines(out)
    assert line["caller"] == line["to"] == line["detail"]["from"] == line["numbers"][0] == expected
    assert line["event"].startswith(f"call from {expected} to ")
    assert stdlib["event"] == f"dialing {expected}"
    if mode != "full":
        assert NUMBER not in json.dumps(line)
        assert "+442071838750" not in line["event"]
        assert "+1 555 000 1234" not in line["callee"]


def test_number_keys_leave_other_values_alone() -> None:
    redactor = Redactor("mask")
    event = redactor(None, "info", {"event": "state", "from": "STARTING", "to": "SERVING", "port": 8000})
    assert event == {"event": "state", "from": "STARTING", "to": "SERVING", "port": 8000}


def test_ids_and_timestamps_are_not_mistaken_for_numbers() -> None:
    redactor = Redactor("mask")
    text = "call CA1234567890abcdef at 2024-05-01T12:00:00Z, port 8000, id 15550001234"
    assert redactor.text(text) == text


def test_redact_number() -> None:
    assert redact_number(NUMBER, "full") == NUMBER
    assert redact_number(NUMBER, "mask") == "***1234"
    assert redact_number(NUMBER, "hash_only") == hashed()
    assert hashed() != "sha256:" + hashlib.sha256(NUMBER.encode()).hexdigest()[:16]  # keyed, not a bare hash
    assert redact_number("", "hash_only") == ""
    with pytest.raises(ValueError, match="redact_phone is 'nope'"):
        redact_number(NUMBER, "nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected one of full, mask, hash_only"):
        Redactor("nope")  # type: ignore[arg-type]


def test_formatted_numbers_hash_like_e164() -> None:
    event = Redactor("hash_only")(None, "info", {"caller": "+1 (555) 000-1234"})
    assert event["caller"] == hashed()


def test_url_credentials_in_log_text_are_masked() -> None:
    text = Redactor("full").text("POST https://ops:hunter2@hooks.example.com/x?api_key=sk-9&q=1 failed")
    assert text == "POST https://***@hooks.example.com/x?api_key=***&q=1 failed"
