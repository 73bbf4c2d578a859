"""SignalWire's compatibility wire: cXML, the space URL, and X-SignalWire-Signature both ways."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from patterd.protocols import signalwire as proto
from patterd.protocols import twilio

KEY = "PSK_9a2c4e6f8b0d1e3f5a7c9e1b"
URL = "https://gw.example.com/webhooks/signalwire/status?call_id=call_1"


def test_connect_stream_carries_the_bearer_token_and_parameters() -> None:
    cxml = proto.connect_stream(
        "wss://gw.example.com/ws/signalwire/stream/call_1", {"call_id": "call_1"}, "tok"
    )
    root = ET.fromstring(cxml)
    stream = root.find("Connect/Stream")
    assert root.tag == "Response" and stream is not None
    assert stream.attrib == {
        "url": "wss://gw.example.com/ws/signalwire/stream/call_1",
        "authBearerToken": "tok",
    }
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [("call_id", "call_1")]
    # Without a token it is exactly Twilio's <Connect><Stream>.
    assert proto.connect_stream("wss://h/x", {"a": "b"}) == twilio.connect_stream("wss://h/x", {"a": "b"})


def test_the_rest_of_the_wire_is_twilios() -> None:
    assert (
        proto.StreamState is twilio.StreamState
        and proto.reject is twilio.reject
        and proto.dial is twilio.dial
    )


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("example.signalwire.com", "https://example.signalwire.com"),
        ("https://example.signalwire.com/", "https://example.signalwire.com"),
        ("https://example.signalwire.com/api/laml", "https://example.signalwire.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ],
)
def test_space_base(given: str, base: str) -> None:
    assert proto.space_base(given) == base


def test_space_base_refuses_what_is_no_host() -> None:
    with pytest.raises(ValueError, match="space URL"):
        proto.space_base("https://")


def test_form_signatures_match_the_compatibility_sdks_validator_both_ways() -> None:
    params = {"CallSid": "2e3f", "CallStatus": "completed", "From": "+15551230001", "To": "+15550001234"}
    body = "CallSid=2e3f&CallStatus=completed&From=%2B15551230001&To=%2B15550001234"
    theirs = RequestValidator(KEY).compute_signature(URL, params)
    assert proto.validate_signature(KEY, URL, body, list(params.items()), theirs)
    ours = twilio.compute_signature(KEY, URL, params)
    assert RequestValidator(KEY).validate(URL, params, ours)
    # Keyed with the Signing Key: the API token (or any other key) does not verify.
    assert not proto.validate_signature("PTapitoken", URL, body, list(params.items()), theirs)
    assert not proto.validate_signature(
        KEY, URL.replace("call_1", "call_2"), body, list(params.items()), theirs
    )
    assert not proto.validate_signature(KEY, URL, body, list(params.items()), None)


def test_json_callbacks_are_signed_over_url_and_raw_body() -> None:
    body = '{"event_type":"calling.call.state","params":{"call_state":"ended"}}'
    signature = proto.json_signature(KEY, URL, body)
    assert len(signature) == 40 and int(signature, 16) >= 0  # lower hex SHA-1
    assert proto.validate_signature(KEY, URL, body, None, signature)
    assert not proto.validate_signature(KEY, URL, body + " ", None, signature)
    assert not proto.validate_signature("other", URL, body, None, signature)
