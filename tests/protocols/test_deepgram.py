"""The Deepgram live wire format: URL and query, auth header, control messages, server messages, refusals."""

from __future__ import annotations

import contextlib
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import deepgram as dg


def test_listen_url_asks_for_the_carriers_audio_and_spells_options_as_deepgram() -> None:
    params = dg.ListenParams(keyterms=("Acme", "refund policy"), utterance_end_ms=1000, endpointing_ms=80)
    url = dg.listen_url("wss://api.deepgram.com", params)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "api.deepgram.com", "/v1/listen")
    query = parse_qsl(parts.query)
    assert ("encoding", "mulaw") in query and ("sample_rate", "8000") in query
    assert ("model", "nova-3") in query and ("language", "en") in query
    assert ("endpointing", "80") in query and ("utterance_end_ms", "1000") in query
    assert ("interim_results", "true") in query and ("smart_format", "true") in query
    assert [v for k, v in query if k == "keyterm"] == ["Acme", "refund policy"]
    assert "keywords" not in dict(query)


def test_endpointing_off_and_optional_parameters_left_out() -> None:
    params = dg.ListenParams(endpointing_ms=None, utterance_end_ms=None, language=None, interim_results=False)
    query = dict(parse_qsl(urlsplit(dg.listen_url("wss://h", params)).query))
    assert query["endpointing"] == "false" and query["interim_results"] == "false"
    assert "utterance_end_ms" not in query and "language" not in query


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://api.eu.deepgram.com", "wss://api.eu.deepgram.com/v1/listen"),
        ("http://10.0.0.5:8080/", "ws://10.0.0.5:8080/v1/listen"),
        ("ws://127.0.0.1:9/prefix", "ws://127.0.0.1:9/prefix/v1/listen"),
    ],
)
def test_base_urls_eu_and_self_hosted(base: str, expected: str) -> None:
    assert dg.listen_url(base, dg.ListenParams()).split("?")[0] == expected


def test_http_url_for_the_probe() -> None:
    assert dg.http_url("wss://api.deepgram.com", dg.PROJECTS_PATH) == "https://api.deepgram.com/v1/projects"
    assert dg.http_url("ws://127.0.0.1:5/", dg.PROJECTS_PATH) == "http://127.0.0.1:5/v1/projects"


def test_api_keys_use_the_token_scheme_and_controls_are_json_text() -> None:
    assert dg.auth_headers("abc") == {"Authorization": "Token abc"}
    assert [json.loads(m) for m in (dg.KEEPALIVE, dg.FINALIZE, dg.CLOSE_STREAM)] == [
        {"type": "KeepAlive"},
        {"type": "Finalize"},
        {"type": "CloseStream"},
    ]


RESULTS = {
    "type": "Results",
    "channel_index": [0, 1],
    "duration": 1.5,
    "start": 2.25,
    "is_final": True,
    "speech_final": True,
    "from_finalize": False,
    "channel": {"alternatives": [{"transcript": "another big", "confidence": 0.9, "words": []}]},
    "metadata": {"request_id": "r"},
}


def test_results_parsed() -> None:
    message = dg.parse(json.dumps(RESULTS))
    assert message == dg.Results("another big", True, True, False, 2.25, 1.5, 0.9)
    assert isinstance(message, dg.Results) and message.end_ms == 3750.0
    interim = dg.parse(json.dumps(RESULTS | {"is_final": False, "speech_final": False}))
    assert isinstance(interim, dg.Results) and not interim.is_final and not interim.speech_final
    empty = dg.parse(json.dumps(RESULTS | {"channel": {"alternatives": []}}))
    assert isinstance(empty, dg.Results) and empty.transcript == "" and empty.confidence is None


def test_other_server_messages() -> None:
    assert dg.parse('{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.4}') == dg.UtteranceEnd(2.4)
    assert dg.parse('{"type":"SpeechStarted","channel":[0],"timestamp":0.5}') == dg.SpeechStarted(0.5)
    meta = '{"type":"Metadata","request_id":"abc","duration":3.2,"channels":1,"created":"x","sha256":"y"}'
    assert dg.parse(meta) == dg.Metadata("abc", 3.2)
    assert dg.parse('{"type":"Error","variant":"x","description":"bad audio"}') == dg.ErrorMessage(
        "bad audio", "x"
    )
    assert dg.parse('{"type":"SomethingNew"}') == dg.Unknown("SomethingNew")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1]",
        "{}",
        '{"type":"Results"}',
        '{"type":"Results","channel":{"alternatives":[{"transcript":5}]},"start":0,"duration":1}',
        '{"type":"Results","channel":{"alternatives":[]},"start":"0","duration":1}',
        '{"type":"UtteranceEnd","last_word_end":true}',
        "[" * 100000,
        b"\xff\xfe",
    ],
)
def test_malformed_messages_raise_protocol_errors(raw: str | bytes) -> None:
    with pytest.raises(dg.DeepgramProtocolError):
        dg.parse(raw)


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_parse_never_raises_anything_else(raw: str | bytes) -> None:
    with contextlib.suppress(dg.DeepgramProtocolError):
        dg.parse(raw)


JUNK = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60)
@given(JUNK)
def test_results_shaped_junk_never_raises_anything_else(junk: object) -> None:
    for key in ("channel", "start", "duration", "is_final", "last_word_end"):
        try:
            dg.parse(json.dumps(RESULTS | {key: junk}))
            dg.parse(json.dumps({"type": "UtteranceEnd", key: junk}))
        except dg.DeepgramProtocolError:
            pass


def test_handshake_error_reads_dg_error() -> None:
    assert dg.handshake_error(401, {"DG-Error": "Invalid credentials."}) == "HTTP 401: Invalid credentials."
    assert dg.handshake_error(503, {}) == "HTTP 503"
