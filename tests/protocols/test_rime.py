"""The Rime ws3 wire format: URL and query, Bearer header, client messages, server events."""

from __future__ import annotations

import base64
import contextlib
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patterd.protocols import rime as wire


def test_ws_url_carries_the_voice_and_the_carrier_format() -> None:
    url = wire.ws_url(
        wire.DEFAULT_BASE_URL, wire.SynthesisParams(speaker="astra", model_id="arcana", lang="eng")
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "users-ws.rime.ai", "/ws3")
    assert parse_qsl(parts.query) == [
        ("speaker", "astra"),
        ("modelId", "arcana"),
        ("audioFormat", "mulaw"),
        ("samplingRate", "8000"),
        ("lang", "eng"),
    ]
    assert wire.ws_url("http://127.0.0.1:7/", wire.SynthesisParams("a", "b")).startswith(
        "ws://127.0.0.1:7/ws3?"
    )


def test_client_messages() -> None:
    assert wire.auth_headers("k") == {"Authorization": "Bearer k"}
    assert json.loads(wire.text_message("Hi.", "c1")) == {"text": "Hi.", "contextId": "c1"}
    assert json.loads(wire.text_message("Hi.")) == {"text": "Hi."}
    assert [json.loads(m) for m in (wire.FLUSH, wire.CLEAR, wire.EOS)] == [
        {"operation": "flush"},
        {"operation": "clear"},
        {"operation": "eos"},
    ]


def test_events() -> None:
    data = base64.b64encode(b"\x01\x02\xff").decode()
    assert wire.parse(json.dumps({"type": "chunk", "data": data, "contextId": "c"})) == wire.Chunk(
        b"\x01\x02\xff", "c"
    )
    assert wire.parse(json.dumps({"type": "chunk", "data": data, "contextId": None})) == wire.Chunk(
        b"\x01\x02\xff", None
    )
    stamps = {"type": "timestamps", "word_timestamps": {"words": ["a", "b"], "start": [0, 1], "end": [1, 2]}}
    assert wire.parse(json.dumps(stamps)) == wire.Timestamps(("a", "b"), None)
    assert wire.parse('{"type":"done","contextId":"c"}') == wire.Done("c")
    assert wire.parse('{"type":"error","message":"bad speaker"}') == wire.ErrorMessage("bad speaker")
    assert wire.parse('{"type":"metrics"}') == wire.Unknown("metrics")


@pytest.mark.parametrize(
    "bad",
    [
        "nope",
        "[]",
        "{}",
        '{"type":"chunk"}',
        '{"type":"chunk","data":"%%%"}',
        '{"type":"chunk","data":"AAAA","contextId":5}',
        '{"type":"timestamps","word_timestamps":{}}',
    ],
)
def test_malformed_events_raise_the_protocol_error(bad: str) -> None:
    with pytest.raises(wire.RimeProtocolError):
        wire.parse(bad)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_never_raises_anything_else(data: str | bytes) -> None:
    with contextlib.suppress(wire.RimeProtocolError):
        wire.parse(data)


def test_error_text() -> None:
    assert wire.error_text(401, '{"message":"Unauthorized"}') == "HTTP 401: Unauthorized"
    assert wire.error_text(502, "<html>") == "HTTP 502"
