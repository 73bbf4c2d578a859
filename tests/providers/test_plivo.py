"""The Plivo carrier over real loopback sockets: Starlette on Hypercorn in front, the fake Plivo outside."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr, ValidationError

from patterd.errors import ProviderAuthError, ProviderError
from patterd.protocols import plivo as proto
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted, StreamStopped
from patterd.providers.kinds import Carrier, DialRequest, InboundCall
from patterd.providers.plivo import SPEC, Options, PlivoCarrier
from patterd.providers.spec import BuildContext
from tests.fakes.plivo import FakePlivo, FakePlivoCall, FakePlivoRest
from tests.providers.carrier_support import AdmittingRouter, next_event
from tests.serving import carrier_app, serve_app

PUBLIC = "gw.example.com"


@dataclass
class Harness:
    rest: FakePlivoRest
    net: FakePlivo
    carrier: PlivoCarrier
    router: AdmittingRouter


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    router = AdmittingRouter()
    rest = await FakePlivoRest().start()
    try:
        options = Options(
            auth_id=rest.auth_id,
            auth_token=SecretStr(rest.auth_token),
            base_url=rest.base_url,
            retry_backoff_secs=0.01,
            stream_start_timeout_secs=2,
        )
        async with SPEC.build(options, BuildContext(public_host=PUBLIC)) as carrier:
            assert isinstance(carrier, PlivoCarrier) and isinstance(carrier, Carrier)
            conforms: Carrier = carrier  # mypy checks PlivoCarrier against the Carrier protocol
            assert conforms is carrier and SPEC.carrier is not None
            app = carrier_app(carrier, router, "/webhooks/plivo/{hook}", SPEC.carrier.media_path)
            async with serve_app(app) as url, FakePlivo(url, PUBLIC, rest=rest) as net:
                yield Harness(rest, net, carrier, router)
    finally:
        await rest.close()


def test_options_require_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLIVO_AUTH_ID", raising=False)
    monkeypatch.delenv("PLIVO_AUTH_TOKEN", raising=False)
    with pytest.raises(
        ValidationError, match="Plivo carrier requires auth_id and auth_token; missing auth_token"
    ):
        Options(auth_id="MA1")
    monkeypatch.setenv("PLIVO_AUTH_ID", "MAENV")
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "s3cr3t-value")
    options = Options()
    assert options.auth_id == "MAENV" and "s3cr3t" not in repr(options)
    with pytest.raises(ValidationError, match="extra"):
        Options.model_validate({"auth_id": "MA1", "auth_token": "t", "auth_tokn": "x"})


async def test_signed_inbound_call_answers_a_bidirectional_stream(harness: Harness) -> None:
    call = await harness.net.inbound_call("+15551112222", "+15550001234", connect=False)
    assert call.webhook_status == 200 and call.xml is not None and call.xml.elements == ("Stream",)
    assert call.xml.stream_url is not None
    assert call.xml.stream_url.startswith(f"wss://{PUBLIC}/ws/plivo/stream/call-1?token=")
    attrs = call.xml.stream_attributes
    assert attrs["bidirectional"] == "true" and attrs["keepCallAlive"] == "true"
    assert attrs["contentType"] == "audio/x-mulaw;rate=8000"
    assert proto.decode_extra_headers(attrs["extraHeaders"]) == {"call_id": "call-1"}
    assert call.xml.stream_url.endswith(
        "&call_token=tok-call-1"
    )  # the cluster's token: too long for extraHeaders
    assert harness.router.issued["call-1"] == InboundCall(
        "plivo", call.call_sid, "15551112222", "15550001234", "inbound", None
    )


async def test_bad_or_missing_signature_is_403_and_counted(harness: Harness) -> None:
    params = {"CallUUID": "u-1", "From": "1555", "To": "1666", "Direction": "inbound"}
    voice = f"https://{PUBLIC}/webhooks/plivo/voice"
    assert (await harness.net.post_webhook(voice, params, signature="bm9wZQ=="))[0] == 403
    assert (await harness.net.post_webhook(voice, params, signature=None))[0] == 403
    forged = harness.net.sign("https://evil.example.com/webhooks/plivo/voice", params, "1")
    assert (await harness.net.post_webhook(voice, params, signature=forged))[0] == 403
    assert harness.router.rejections == [("plivo", "signature")] * 3 and harness.router.issued == {}
    assert (await harness.net.post_webhook(f"https://{PUBLIC}/webhooks/plivo/sms", params))[0] == 404


async def test_draining_hangs_up_with_reason_rejected(harness: Harness) -> None:
    harness.router.draining = True
    call = await harness.net.inbound_call()
    assert call.xml is not None and call.xml.hangup_reason == "rejected" and call.xml.stream_url is None


async def test_media_socket_needs_our_token_and_an_expected_call(harness: Harness) -> None:
    call = await harness.net.inbound_call(connect=False)
    assert call.xml is not None and call.xml.stream_url is not None
    await call.connect_media(url=call.xml.stream_url.replace("token=", "token=00"))
    assert call.handshake_status == 403 and harness.router.rejections == [("plivo", "signature")]
    other = FakePlivoCall(harness.net, "u-x", "+1", "+2", "inbound")
    other.xml = call.xml
    # A valid token for another call id does not open this one.
    await other.connect_media(url=call.xml.stream_url.replace("call-1", "call-2"))
    assert other.handshake_status == 403 and harness.router.connected == set()


async def test_media_round_trip_checkpoints_clear_dtmf_and_close(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    call.continuous = False
    leg, events = await harness.router.leg("call-1")
    started = await next_event(events, StreamStarted)
    assert started == StreamStarted(call.stream_sid, call.call_sid, {"call_id": "call-1"})
    assert harness.router.media_tokens == ["tok-call-1"]

    speech = bytes(range(160)) * 3
    await call.say(speech)
    heard = b"".join([(await next_event(events, CallerAudio)).payload for _ in range(3)])
    assert heard == speech

    await leg.send_audio(b"\x10" * 400)
    await call.wait_for_audio(320)
    await leg.send_mark("m1")
    assert await next_event(events, MarkPlayed) == MarkPlayed("m1")
    assert call.media_frame_sizes == [160, 160, 80] and bytes(call.played) == b"\x10" * 400

    # Barge-in: Plivo drops the queue and never answers m2; the leg still sees m2 come back.
    await leg.send_audio(b"\x20" * 16000)
    await leg.send_mark("m2")
    await call.wait_for_audio(400 + 320, played=True)
    await leg.clear()
    await call.wait_for_clear()
    assert await next_event(events, MarkPlayed) == MarkPlayed("m2")
    assert call.cleared_checkpoints == ["m2"] and [n for _, n in call.marks_echoed] == ["m1"]
    assert len(call.played) < 400 + 16000 and call.buffered_bytes == 0 and call.violations == []

    await call.send_dtmf("7")
    assert await next_event(events, CallerDtmf) == CallerDtmf("7")
    await call.stop()  # Plivo closes the socket
    assert isinstance(await next_event(events, StreamStopped), StreamStopped)


async def test_bad_frames_are_counted_and_the_call_survives(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    call.continuous = False
    _, events = await harness.router.leg("call-1")
    await next_event(events, StreamStarted)
    for raw in ("not json", '{"event": "media", "media": {"payload": "@@"}}', '{"event": "teleport"}'):
        await call.send_raw(raw)
    await call.send_dtmf("1")
    assert await next_event(events, CallerDtmf) == CallerDtmf("1")
    assert harness.router.bad_frame_reasons == ["not_json", "bad_audio", "unknown_event"]


async def test_outbound_dial_answer_hangup_and_status(harness: Harness) -> None:
    harness.router.issued["call-9"] = InboundCall(
        "plivo", "", "+15550001234", "+15557654321", "outbound", "call-9"
    )
    request_uuid = await harness.carrier.dial(DialRequest("call-9", "+15557654321", "+15550001234"))
    created = await harness.rest.wait_for_request(lambda r: r.method == "POST" and r.path.endswith("/Call/"))
    assert created.body["to"] == "15557654321" and created.body["from"] == "15550001234"
    assert created.body["answer_url"] == f"https://{PUBLIC}/webhooks/plivo/voice?call_id=call-9"
    assert created.body["hangup_url"].endswith("/webhooks/plivo/hangup?call_id=call-9")
    resource = await harness.rest.wait_for_call()
    assert resource.request_uuid == request_uuid
    call = await harness.net.answer_outbound(resource)
    assert harness.router.statuses[0][1] == "ringing"
    _, events = await harness.router.leg("call-9")
    assert (await next_event(events, StreamStarted)).parameters["call_id"] == "call-9"

    await harness.carrier.hangup(request_uuid)  # the id dial() returned: Plivo's RequestUUID
    deleted = await harness.rest.wait_for_request(lambda r: r.method == "DELETE")
    assert deleted.path.endswith(f"/Call/{call.call_sid}/") and deleted.status == 204
    await call.wait_closed()
    async with asyncio.timeout(5):
        while not any(s == "completed" for _, s, _ in harness.router.statuses):
            harness.router.changed.clear()
            await harness.router.changed.wait()
    _, status, detail = harness.router.statuses[-1]
    assert status == "completed" and detail is not None and detail["hangup_cause"] == "NORMAL_CLEARING"


async def test_machine_detection_on_dial_and_its_callback(harness: Harness) -> None:
    harness.router.issued["call-7"] = InboundCall("plivo", "", "+1555", "+1666", "outbound", "call-7")
    await harness.carrier.dial(DialRequest("call-7", "+15557654321", "+15550001234", machine_detection=True))
    created = await harness.rest.wait_for_request(lambda r: r.method == "POST" and r.path.endswith("/Call/"))
    assert created.body["machine_detection"] == "true" and created.body["machine_detection_method"] == "POST"
    assert created.body["machine_detection_url"] == f"https://{PUBLIC}/webhooks/plivo/amd?call_id=call-7"
    call = await harness.net.answer_outbound(await harness.rest.wait_for_call())
    assert await call.post_machine_detection(True) == 204
    assert await call.post_machine_detection(False) == 204
    assert harness.router.machines == [("call-7", "machine_start"), ("call-7", "human")]


async def test_unanswered_outbound_call_is_cancelled_through_its_request(harness: Harness) -> None:
    request_uuid = await harness.carrier.dial(DialRequest("call-5", "+15557654321", "+15550001234"))
    await harness.carrier.hangup(request_uuid)
    cancelled = await harness.rest.wait_for_request(lambda r: r.method == "DELETE")
    assert cancelled.path.endswith(f"/Request/{request_uuid}/") and cancelled.status == 204


async def test_transfer_points_the_a_leg_at_signed_dial_xml(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    _, events = await harness.router.leg("call-1")
    await next_event(events, StreamStarted)
    await harness.carrier.transfer(call.call_sid, "+15559990000")
    transfer = await harness.rest.wait_for_request(
        lambda r: r.method == "POST" and "/Call/" in r.path and r.body.get("legs") == "aleg"
    )
    assert transfer.body["aleg_method"] == "POST" and transfer.status == 202
    await call.wait_closed()
    assert call.transferred_to == "+15559990000"


async def test_recording_and_rest_errors(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    await harness.router.leg("call-1")
    await harness.carrier.start_recording(call.call_sid)
    record = await harness.rest.wait_for_request(lambda r: r.path.endswith("/Record/"))
    assert record.body["callback_url"] == f"https://{PUBLIC}/webhooks/plivo/recording?call_id=call-1"
    params = {
        "record_url": "https://media.plivo.com/r.mp3",
        "recording_duration": "3",
        "call_uuid": call.call_sid,
    }
    assert (await harness.net.post_webhook(record.body["callback_url"], params))[0] == 204
    assert harness.router.recordings == [("call-1", "https://media.plivo.com/r.mp3", 3.0)]

    harness.rest.fail_next(500, times=2)
    await harness.carrier.check()  # retried past two 500s
    harness.rest.fail_next(401)
    with pytest.raises(ProviderAuthError, match="auth_id and auth_token"):
        await harness.carrier.check()
    harness.rest.fail_next(400)
    with pytest.raises(ProviderError, match="fault injected"):
        await harness.carrier.dial(DialRequest("call-6", "+1555", "+1666"))
