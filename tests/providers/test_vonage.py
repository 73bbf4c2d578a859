"""The Vonage carrier over real loopback sockets: Starlette on Hypercorn in front, the fake Vonage outside."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from patterd.errors import ProviderAuthError, ProviderError
from patterd.protocols import vonage as proto
from patterd.protocols.audio import FRAME_BYTES
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted, StreamStopped
from patterd.providers.kinds import Carrier, DialRequest, InboundCall
from patterd.providers.spec import BuildContext
from patterd.providers.vonage import SPEC, Options, VonageCarrier
from tests.fakes.vonage import FakeVonage, FakeVonageCall, FakeVonageRest
from tests.providers.carrier_support import AdmittingRouter, next_event
from tests.serving import carrier_app, serve_app

PUBLIC = "gw.example.com"


@dataclass
class Harness:
    rest: FakeVonageRest
    net: FakeVonage
    carrier: VonageCarrier
    router: AdmittingRouter


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    router = AdmittingRouter()
    rest = await FakeVonageRest().start()
    (tmp_path / "private.key").write_text(rest.private_key)
    try:
        options = Options(
            application_id=rest.application_id,
            private_key=SecretStr("private.key"),  # a path, relative to the config's directory
            signature_secret=SecretStr(rest.signature_secret),
            base_url=rest.base_url,
            retry_backoff_secs=0.01,
            stream_start_timeout_secs=2,
        )
        ctx = BuildContext(public_host=PUBLIC, config_dir=tmp_path, phone_number="+15550001234")
        async with SPEC.build(options, ctx) as carrier:
            assert isinstance(carrier, VonageCarrier) and isinstance(carrier, Carrier)
            conforms: Carrier = carrier  # mypy checks VonageCarrier against the Carrier protocol
            assert conforms is carrier and SPEC.carrier is not None
            app = carrier_app(carrier, router, "/webhooks/vonage/{hook}", SPEC.carrier.media_path)
            async with serve_app(app) as url, FakeVonage(url, PUBLIC, rest=rest) as net:
                yield Harness(rest, net, carrier, router)
    finally:
        await rest.close()


def test_options_require_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY", "VONAGE_SIGNATURE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="missing private_key and signature_secret: set"):
        Options(application_id="app-1")
    Options(application_id="app-1", private_key=SecretStr("k.pem"), validate_signatures=False)
    monkeypatch.setenv("VONAGE_APPLICATION_ID", "app-env")
    monkeypatch.setenv("VONAGE_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\\nsecret-key-text")
    monkeypatch.setenv("VONAGE_SIGNATURE_SECRET", "s3cr3t-value")
    options = Options()
    assert (
        options.application_id == "app-env"
        and "s3cr3t" not in repr(options)
        and "secret-key" not in repr(options)
    )
    with pytest.raises(ValidationError, match="extra"):
        Options.model_validate(
            {"application_id": "a", "private_key": "k", "signature_secret": "s", "privat_key": "x"}
        )


async def test_a_private_key_that_is_not_rsa_is_a_clear_build_error(tmp_path: Path) -> None:
    options = Options(
        application_id="a", private_key=SecretStr("missing.key"), signature_secret=SecretStr("s")
    )
    with pytest.raises(ProviderError, match=r"Vonage private_key: .*missing\.key"):
        async with SPEC.build(options, BuildContext(public_host=PUBLIC, config_dir=tmp_path)):
            pass
    bad = Options(
        application_id="a",
        private_key=SecretStr("-----BEGIN PRIVATE KEY-----\nAAAA"),
        signature_secret=SecretStr("s"),
    )
    with pytest.raises(ProviderError, match="not an unencrypted PEM private key"):
        async with SPEC.build(bad, BuildContext(public_host=PUBLIC)):
            pass


async def test_signed_answer_webhook_connects_a_websocket(harness: Harness) -> None:
    call = await harness.net.inbound_call("+15551112222", "+15550001234", connect=False)
    assert call.webhook_status == 200 and call.ncco is not None and len(call.ncco) == 1
    endpoint = call.endpoint
    assert endpoint is not None and endpoint["content-type"] == "audio/l16;rate=16000"
    assert endpoint["uri"].startswith(f"wss://{PUBLIC}/ws/vonage/stream/call-1?token=")
    assert endpoint["uri"].endswith("&call_token=tok-call-1")
    assert endpoint["headers"] == {"call_id": "call-1", "vonage_uuid": call.call_sid}
    assert harness.router.issued["call-1"] == InboundCall(
        "vonage", call.call_sid, "15551112222", "15550001234", "inbound", None
    )


async def test_bad_or_missing_webhook_jwt_is_403_and_counted(harness: Harness) -> None:
    fields = {"uuid": "u-1", "from": "1555", "to": "1666"}
    voice = f"https://{PUBLIC}/webhooks/vonage/voice"
    body = json.dumps(fields).encode()
    net = harness.net
    assert (await net.post_webhook(voice, fields, token=None))[0] == 403
    assert (await net.post_webhook(voice, fields, token=net.sign(body, secret="x" * 40)))[0] == 403
    assert (await net.post_webhook(voice, fields, token=net.sign(b'{"uuid": "other"}')))[0] == 403  # hash
    assert (await net.post_webhook(voice, fields, token=net.sign(body, iat=int(time.time()) - 3600)))[
        0
    ] == 403
    assert (await net.post_webhook(voice, fields, token=net.sign(body, application_id="another-app")))[
        0
    ] == 403
    assert harness.router.rejections == [("vonage", "signature")] * 5 and harness.router.issued == {}
    assert (await net.post_webhook(f"https://{PUBLIC}/webhooks/vonage/sms", fields))[0] == 404


async def test_draining_answers_an_empty_ncco(harness: Harness) -> None:
    harness.router.draining = True
    call = await harness.net.inbound_call()
    assert call.webhook_status == 200 and call.ncco == [] and call.endpoint is None


async def test_media_socket_needs_our_token_and_an_expected_call(harness: Harness) -> None:
    call = await harness.net.inbound_call(connect=False)
    assert call.endpoint is not None
    uri = call.endpoint["uri"]
    await call.connect_media(url=uri.replace("token=", "token=00"))
    assert call.handshake_status == 403 and harness.router.rejections == [("vonage", "signature")]
    other = FakeVonageCall(harness.net, "u-x", "+1", "+2", "inbound")
    other.ncco = call.ncco
    await other.connect_media(url=uri.replace("call-1", "call-2"))  # call-1's token does not open call-2
    assert other.handshake_status == 403 and harness.router.connected == set()


async def test_media_both_ways_notify_marks_clear_dtmf_and_close(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    call.continuous = False
    leg, events = await harness.router.leg("call-1")
    started = await next_event(events, StreamStarted)
    assert started.carrier_call_id == call.call_sid and started.parameters["call_id"] == "call-1"
    assert harness.router.media_tokens == ["tok-call-1"]

    # Caller speech: L16 16 kHz on the wire, μ-law 8 kHz frames for the session.
    tone = bytes([0x15, 0x95] * 80) * 5
    await call.say(tone)
    heard = [(await next_event(events, CallerAudio)).payload for _ in range(5)]
    assert [len(h) for h in heard] == [FRAME_BYTES] * 5

    # Agent audio: whole 640-byte frames; a mark pads the partial one and goes as a notify.
    await leg.send_audio(b"\x10" * 400)
    await call.wait_for_audio(320)
    await leg.send_mark("m1")
    assert await next_event(events, MarkPlayed) == MarkPlayed("m1")
    assert call.binary_sizes == [640] * 3 and len(call.played) == 480 and call.violations == []
    notify = [m for _, m in call.received if m.get("action") == "notify"]
    assert notify == [{"action": "notify", "payload": {"patterd_mark": "m1"}}]

    # Barge-in: Vonage drops its buffer and never answers m2; the leg still sees m2 come back.
    await leg.send_audio(b"\x20" * 16000)
    await leg.send_mark("m2")
    await call.wait_for_audio(480 + 320, played=True)
    await leg.clear()
    await call.wait_for_clear()
    assert await next_event(events, MarkPlayed) == MarkPlayed("m2")
    assert call.cleared_notifies == [{"patterd_mark": "m2"}] and [n for _, n in call.marks_echoed] == ["m1"]
    assert len(call.played) < 480 + 16000 and call.buffered_bytes == 0 and call.violations == []

    await call.send_dtmf("7")
    assert await next_event(events, CallerDtmf) == CallerDtmf("7")
    await call.close()  # Vonage ends the stream by closing the socket
    assert isinstance(await next_event(events, StreamStopped), StreamStopped)


async def test_bad_frames_are_counted_and_the_call_survives(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    call.continuous = False
    _, events = await harness.router.leg("call-1")
    await next_event(events, StreamStarted)
    for raw in ("not json", '{"event": "websocket:dtmf", "digit": "x"}', '{"event": "teleport"}'):
        await call.send_raw(raw)
    await call.send_bytes(b"\x01\x02\x03")  # half a sample
    await call.send_dtmf("1")
    assert await next_event(events, CallerDtmf) == CallerDtmf("1")
    assert harness.router.bad_frame_reasons == ["not_json", "bad_dtmf", "unknown_event", "bad_audio"]


async def test_frames_before_connected_are_dropped_and_a_socket_closed_early_ends_the_call(
    harness: Harness,
) -> None:
    call = await harness.net.inbound_call(connect=False)
    assert call.endpoint is not None
    url = harness.net.local_url(call.endpoint["uri"])
    async with harness.net.session.ws_connect(url) as ws:
        await ws.send_bytes(bytes(640))  # audio before websocket:connected
        await ws.send_str('{"event": "websocket:dtmf", "digit": "3"}')
        await ws.send_str(
            json.dumps({"event": "websocket:connected", "content-type": proto.CONTENT_TYPE, **call.headers})
        )
        _, events = await harness.router.leg("call-1")
        assert (await next_event(events, StreamStarted)).parameters["call_id"] == "call-1"
        assert harness.router.bad_frame_reasons == ["before_start", "before_start"]
    assert isinstance(await next_event(events, StreamStopped), StreamStopped)

    second = await harness.net.inbound_call(connect=False)
    assert second.endpoint is not None
    async with harness.net.session.ws_connect(harness.net.local_url(second.endpoint["uri"])) as ws:
        await ws.close()  # gone before websocket:connected
    _, events = await harness.router.leg("call-2")
    assert await next_event(events, StreamStopped) == StreamStopped("disconnected before websocket:connected")


async def test_outbound_dial_answer_events_and_hangup(harness: Harness) -> None:
    harness.router.issued["call-9"] = InboundCall(
        "vonage", "", "+15550001234", "+15557654321", "outbound", "call-9"
    )
    uuid = await harness.carrier.dial(
        DialRequest("call-9", "+15557654321", "+15550001234", machine_detection=True)
    )
    created = await harness.rest.wait_for_request(lambda r: r.method == "POST" and r.path == "/v1/calls")
    assert created.authorized and created.claims["application_id"] == harness.rest.application_id
    assert created.claims["exp"] - created.claims["iat"] == 15 * 60 and created.claims["jti"]
    assert created.body["to"] == [{"type": "phone", "number": "15557654321"}]
    assert created.body["from"] == {"type": "phone", "number": "15550001234"}
    assert created.body["answer_url"] == [f"https://{PUBLIC}/webhooks/vonage/voice?call_id=call-9"]
    assert created.body["event_url"] == [f"https://{PUBLIC}/webhooks/vonage/event?call_id=call-9"]
    assert created.body["answer_method"] == created.body["event_method"] == "POST"
    assert created.body["machine_detection"] == "continue"
    resource = await harness.rest.wait_for_call()
    assert resource.uuid == uuid
    call = await harness.net.answer_outbound(resource)
    assert [s for _, s, _ in harness.router.statuses] == ["ringing", "in_progress"]
    _, events = await harness.router.leg("call-9")
    assert (await next_event(events, StreamStarted)).parameters["call_id"] == "call-9"
    assert call.event_url is not None
    assert (await harness.net.post_webhook(call.event_url, harness.net.event(call, "machine")))[0] == 204
    assert harness.router.machines == [("call-9", "machine_start")]

    await harness.carrier.hangup(uuid)
    put = await harness.rest.wait_for_request(lambda r: r.method == "PUT")
    assert put.path == f"/v1/calls/{uuid}" and put.body == {"action": "hangup"} and put.status == 204
    await call.wait_closed()
    async with asyncio.timeout(5):
        while not any(s == "completed" for _, s, _ in harness.router.statuses):
            harness.router.changed.clear()
            await harness.router.changed.wait()
    _, status, detail = harness.router.statuses[-1]
    assert status == "completed" and detail is not None and detail["duration_secs"] == "3"


async def test_transfer_replaces_the_ncco_with_a_phone_connect(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    _, events = await harness.router.leg("call-1")
    await next_event(events, StreamStarted)
    await harness.carrier.transfer(call.call_sid, "+15559990000")
    put = await harness.rest.wait_for_request(lambda r: r.method == "PUT")
    assert put.body == {
        "action": "transfer",
        "destination": {
            "type": "ncco",
            "ncco": [
                {
                    "action": "connect",
                    "endpoint": [{"type": "phone", "number": "15559990000"}],
                    "from": "15550001234",
                }
            ],
        },
    }
    await call.wait_closed()
    assert call.transferred_to == "15559990000"


async def test_recording_is_refused_and_rest_errors_map(harness: Harness) -> None:
    assert harness.carrier.records_calls is False
    with pytest.raises(ProviderError, match="NCCO record action"):
        await harness.carrier.start_recording("u-1")
    harness.rest.fail_next(500, times=2)
    await harness.carrier.check()  # retried past two 500s
    harness.rest.fail_next(401)
    with pytest.raises(ProviderAuthError, match="HTTP 401 Fault"):
        await harness.carrier.check()
    unknown = await harness.net.post_webhook(
        f"https://{PUBLIC}/webhooks/vonage/event", {"uuid": "u-unknown", "status": "completed"}
    )
    assert unknown[0] == 204 and harness.router.statuses == []
