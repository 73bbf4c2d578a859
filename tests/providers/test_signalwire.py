"""The SignalWire carrier over real loopback sockets against the fake SignalWire (LaML REST, signed cXML webhooks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr, ValidationError

from patterd.errors import ProviderAuthError
from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, StreamStarted, StreamStopped
from patterd.providers.kinds import Carrier, DialRequest, InboundCall
from patterd.providers.signalwire import SPEC, Options, SignalWireCarrier
from patterd.providers.spec import BuildContext
from tests.fakes.signalwire import FakeSignalWire, FakeSignalWireCall, FakeSignalWireRest
from tests.providers.carrier_support import AdmittingRouter, next_event
from tests.serving import carrier_app, serve_app

PUBLIC = "gw.example.com"


@dataclass
class Harness:
    rest: FakeSignalWireRest
    net: FakeSignalWire
    carrier: SignalWireCarrier
    router: AdmittingRouter


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    router = AdmittingRouter()
    async with FakeSignalWireRest() as rest:
        assert isinstance(rest, FakeSignalWireRest)
        options = Options(
            project_id=rest.project_id,
            token=SecretStr(rest.token),
            signing_key=SecretStr(rest.signing_key),
            space_url=rest.base_url,
            retry_backoff_secs=0.01,
            stream_start_timeout_secs=2,
        )
        async with SPEC.build(options, BuildContext(public_host=PUBLIC)) as carrier:
            assert isinstance(carrier, SignalWireCarrier) and isinstance(carrier, Carrier)
            conforms: Carrier = carrier
            assert conforms is carrier and SPEC.carrier is not None
            app = carrier_app(carrier, router, "/webhooks/signalwire/{hook}", SPEC.carrier.media_path)
            async with serve_app(app) as url, FakeSignalWire(url, PUBLIC, rest=rest) as net:
                yield Harness(rest, net, carrier, router)


def test_options_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PROJECT_ID", "TOKEN", "SPACE_URL", "SIGNING_KEY"):
        monkeypatch.delenv(f"SIGNALWIRE_{name}", raising=False)
    with pytest.raises(ValidationError, match=r"missing space_url and signing_key: .*SIGNALWIRE_SPACE_URL"):
        Options(project_id="p", token=SecretStr("t"))
    monkeypatch.setenv("SIGNALWIRE_PROJECT_ID", "p-env")
    monkeypatch.setenv("SIGNALWIRE_TOKEN", "PTs3cr3t")
    monkeypatch.setenv("SIGNALWIRE_SPACE_URL", "example.signalwire.com")
    options = Options(validate_signatures=False)
    assert options.api_base() == "https://example.signalwire.com" and "s3cr3t" not in repr(options)
    assert (
        Options(base_url="http://127.0.0.1:9", validate_signatures=False).api_base() == "http://127.0.0.1:9"
    )


async def test_signed_inbound_call_answers_cxml_with_a_bearer_token(harness: Harness) -> None:
    call = await harness.net.inbound_call("+15551112222", "+15550001234", connect=False)
    assert call.webhook_status == 200 and call.twiml is not None and call.twiml.verbs == ("Connect",)
    assert call.twiml.stream_url == f"wss://{PUBLIC}/ws/signalwire/stream/call-1?call_token=tok-call-1"
    assert call.twiml.parameters == {"call_id": "call-1", "agent": "receptionist", "call_token": "tok-call-1"}
    assert call.bearer_token and len(call.bearer_token) == 64
    assert harness.router.issued["call-1"] == InboundCall(
        "signalwire", call.call_sid, "+15551112222", "+15550001234", "inbound", None
    )


async def test_signatures_are_keyed_with_the_signing_key(harness: Harness) -> None:
    call = await harness.net.inbound_call(signature="bm90IGEgc2lnbmF0dXJl", connect=False)
    assert call.webhook_status == 403
    # Twilio's algorithm keyed with the API token is not SignalWire's signature.
    from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

    params = {"CallSid": "c1", "From": "+1", "To": "+2"}
    url = f"https://{PUBLIC}/webhooks/signalwire/voice"
    with_token = RequestValidator(harness.rest.token).compute_signature(url, params)
    assert (await harness.net.post_webhook(url, params, signature=with_token))[0] == 403
    assert harness.router.rejections == [("signalwire", "signature")] * 2 and harness.router.issued == {}


async def test_media_needs_the_bearer_token(harness: Harness) -> None:
    call = await harness.net.inbound_call(connect=False)
    await call.connect_media(signature="not-the-token")
    assert call.handshake_status == 403 and harness.router.rejections == [("signalwire", "signature")]
    stranger = FakeSignalWireCall(harness.net, "c-x", "+1", "+2", "inbound")
    stranger.twiml = call.twiml
    await stranger.connect_media(signature=None)
    assert stranger.handshake_status == 403 and harness.router.connected == set()


async def test_media_round_trip_is_twilios(harness: Harness) -> None:
    call = await harness.net.inbound_call(continuous=False)
    leg, events = await harness.router.leg("call-1")
    started = await next_event(events, StreamStarted)
    assert started.stream_id == call.stream_sid and started.parameters["call_id"] == "call-1"
    assert harness.router.media_tokens == ["tok-call-1"]
    await call.say(bytes(range(160)))
    assert (await next_event(events, CallerAudio)).payload == bytes(range(160))
    await leg.send_audio(b"\x10" * 400)
    await leg.send_mark("m1")
    assert await next_event(events, MarkPlayed) == MarkPlayed("m1")
    await leg.send_audio(b"\x20" * 16000)
    await leg.send_mark("m2")
    await leg.clear()
    await call.wait_for_clear()
    assert await next_event(events, MarkPlayed) == MarkPlayed("m2")
    await call.send_dtmf("3")
    assert await next_event(events, CallerDtmf) == CallerDtmf("3")
    assert call.violations == []
    await call.stop()
    assert await next_event(events, StreamStopped) == StreamStopped("stop")


async def test_outbound_dial_amd_hangup_on_the_laml_root(harness: Harness) -> None:
    harness.router.issued["call-9"] = InboundCall("signalwire", "", "+1555", "+1666", "outbound", "call-9")
    sid = await harness.carrier.dial(
        DialRequest("call-9", "+15557654321", "+15550001234", machine_detection=True)
    )
    created = await harness.rest.wait_for_request(lambda r: r.path.endswith("/Calls.json"))
    assert created.path == f"/api/laml/2010-04-01/Accounts/{harness.rest.project_id}/Calls.json"
    assert created.get("Url") == f"https://{PUBLIC}/webhooks/signalwire/voice?call_id=call-9"
    assert created.get("AsyncAmd") == "true"
    resource = await harness.rest.wait_for_call()
    assert resource.sid == sid
    call = await harness.net.answer_outbound(resource)
    await harness.router.leg("call-9")
    assert await call.post_amd("human") == 204 and harness.router.machines == [("call-9", "human")]
    await harness.carrier.hangup(sid)
    await call.wait_closed()
    update = await harness.rest.wait_for_request(lambda r: r.get("Status") == "completed")
    assert update.path.endswith(f"/Calls/{sid}.json")


async def test_transfer_redirects_to_signed_dial_cxml(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    await harness.router.leg("call-1")
    await harness.carrier.transfer(call.call_sid, "+15559990000")
    await call.wait_closed()
    assert call.transferred_to == "+15559990000"


async def test_check_probes_the_project_and_maps_auth_errors(harness: Harness) -> None:
    await harness.carrier.check()
    harness.rest.fail_next(401)
    with pytest.raises(ProviderAuthError, match="project_id and token"):
        await harness.carrier.check()


async def test_recording_callback_reaches_the_router(harness: Harness) -> None:
    call = await harness.net.inbound_call()
    await harness.router.leg("call-1")
    await harness.carrier.start_recording(call.call_sid)
    started = await harness.rest.wait_for_request(lambda r: r.path.endswith("/Recordings.json"))
    callback = started.get("RecordingStatusCallback")
    assert callback == f"https://{PUBLIC}/webhooks/signalwire/recording?call_id=call-1"
    assert await call.post_recording(callback, "https://example.signalwire.com/r.wav", duration_secs=4) == 204
    assert harness.router.recordings == [("call-1", "https://example.signalwire.com/r.wav", 4.0)]
