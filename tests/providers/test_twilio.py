"""The Twilio carrier over real loopback sockets: Starlette on Hypercorn in front, the fake Twilio outside."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)
from patterd.providers.kinds import Admission, Carrier, CarrierLeg, DialRequest, InboundCall
from patterd.providers.spec import BuildContext
from patterd.providers.twilio import SPEC, Options, TwilioCarrier
from tests.fakes.twilio import FakeCall, FakeTwilio, FakeTwilioRest
from tests.serving import carrier_app, serve_app

PUBLIC = "gw.example.com"
TIMEOUT = 5.0


@dataclass
class ScriptedRouter:
    """A CallRouter that admits calls with sequential ids and hands each media leg to the test."""

    draining: bool = False
    issued: dict[str, InboundCall] = field(default_factory=dict)
    connected: set[str] = field(default_factory=set)
    rejections: list[tuple[str, str]] = field(default_factory=list)
    bad_frames: int = 0
    bad_frame_reasons: list[str] = field(default_factory=list)
    statuses: list[tuple[str, str, Mapping[str, Any] | None]] = field(default_factory=list)
    machines: list[tuple[str, str]] = field(default_factory=list)
    recordings: list[tuple[str, str, float | None]] = field(default_factory=list)
    legs: dict[str, CarrierLeg] = field(default_factory=dict)
    events: dict[str, asyncio.Queue[MediaEvent]] = field(default_factory=dict)
    leg_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    hangup_after_stop: bool = True

    def admit(self, call: InboundCall) -> Admission | None:
        if self.draining:
            return None
        call_id = call.call_id or f"call-{len(self.issued) + 1}"
        self.issued[call_id] = call
        return Admission(call_id, "receptionist", {"agent": "receptionist"})

    def expects_media(self, call_id: str) -> bool:
        return call_id in self.issued and call_id not in self.connected

    def adopts_media(self) -> bool:
        return False  # one process, no cluster secret

    async def admit_media(self, call_id: str, token: str | None) -> str | None:
        return None if self.expects_media(call_id) else "unknown_call"

    async def run_media(self, call_id: str, leg: CarrierLeg) -> None:
        self.connected.add(call_id)
        queue: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self.legs[call_id], self.events[call_id] = leg, queue
        self.leg_arrived.set()
        async for event in leg.events():
            await queue.put(event)

    def call_id_for(self, carrier: str, carrier_call_id: str) -> str | None:
        return next((cid for cid, c in self.issued.items() if c.carrier_call_id == carrier_call_id), None)

    def carrier_status(self, call_id: str, status: str, detail: Mapping[str, Any] | None = None) -> None:
        self.statuses.append((call_id, status, detail))
        self.changed.set()

    def machine_detected(self, call_id: str, answered_by: str) -> None:
        self.machines.append((call_id, answered_by))
        self.changed.set()

    def recording_ready(self, call_id: str, url: str, duration_secs: float | None = None) -> None:
        self.recordings.append((call_id, url, duration_secs))

    def count_rejection(self, carrier: str, reason: str) -> None:
        self.rejections.append((carrier, reason))

    def count_bad_frame(self, carrier: str, reason: str) -> None:
        self.bad_frames += 1
        self.bad_frame_reasons.append(reason)

    async def leg(self, call_id: str) -> tuple[CarrierLeg, asyncio.Queue[MediaEvent]]:
        async with asyncio.timeout(TIMEOUT):
            while call_id not in self.legs:
                self.leg_arrived.clear()
                await self.leg_arrived.wait()
        return self.legs[call_id], self.events[call_id]


async def next_event(queue: asyncio.Queue[MediaEvent], kind: type[Any]) -> Any:
    """The next event of `kind` (skipping caller audio when looking for something else)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            event = await queue.get()
            if isinstance(event, kind):
                return event
            assert isinstance(event, CallerAudio), f"unexpected {event!r} while waiting for {kind.__name__}"


@dataclass
class Harness:
    rest: FakeTwilioRest
    net: FakeTwilio
    carrier: TwilioCarrier
    router: ScriptedRouter


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    router = ScriptedRouter()
    async with FakeTwilioRest() as rest:
        options = Options(
            account_sid=rest.account_sid,
            auth_token=SecretStr(rest.auth_token),
            base_url=rest.base_url,
            retry_backoff_secs=0.01,
            stream_start_timeout_secs=2,
        )
        async with SPEC.build(options, BuildContext(public_host=PUBLIC)) as carrier:
            assert isinstance(carrier, TwilioCarrier) and isinstance(carrier, Carrier)
            conforms: Carrier = carrier  # mypy checks TwilioCarrier against the Carrier protocol
            assert conforms is carrier

            app = carrier_app(carrier, router, "/webhooks/twilio/{hook}", "/ws/stream/{call_id}")
            async with serve_app(app) as url, FakeTwilio(url, PUBLIC, rest=rest) as net:
                yield Harness(rest, net, carrier, router)


# ------------------------------------------------------------------ options


def test_options_require_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    with pytest.raises(ValidationError, match="Twilio carrier requires account_sid and auth_token"):
        Options()
    with pytest.raises(ValidationError, match="Twilio carrier requires account_sid and auth_token"):
        Options(account_sid="AC1")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "ACenv")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "s3cr3t-value")
    options = Options()
    assert options.account_sid == "ACenv" and options.auth_token is not None
    assert options.auth_token.get_secret_value() == "s3cr3t-value" and "s3cr3t" not in repr(options)
    with pytest.raises(ValidationError, match="extra"):
        Options.model_validate({"account_sid": "AC1", "auth_token": "t", "auth_tokn": "x"})


# ------------------------------------------------------------------ webhooks


async def test_signed_inbound_call_answers_connect_stream(harness: Harness) -> None:
    call = await harness.net.inbound_call("+15551112222", "+15550001234", connect=False)
    assert call.webhook_status == 200 and call.twiml is not None
    assert call.twiml.verbs == ("Connect",)
    assert call.twiml.stream_url == f"wss://{PUBLIC}/ws/stream/call-1"
    assert call.twiml.parameters == {"call_id": "call-1", "agent": "receptionist"}
    admitted = harness.router.issued["call-1"]
    assert admitted == InboundCall("twilio", call.call_sid, "+15551112222", "+15550001234", "inbound", None)


async def test_bad_or_missing_signature_is_403_and_counted(harness: Harness) -> None:
    call = await harness.net.inbound_call(signature="bm90IGEgc2lnbmF0dXJl", connect=False)
    assert call.webhook_status == 403 and call.twiml is None
    call = await harness.net.inbound_call(signature=None, connect=False)
    assert call.webhook_status == 403
    assert harness.router.rejections == [("twilio", "signature"), ("twilio", "signature")]
    assert harness.router.issued == {}
    # Signed for another host (the URL is part of what is signed).
    other = FakeTwilio(harness.net.daemon_url, PUBLIC, rest=harness.rest)
    status, _ = await harness.net.post_webhook(
        f"https://{PUBLIC}/webhooks/twilio/voice",
        {"CallSid": "CA1"},
        signature=other.validator.compute_signature(
            "https://evil.example.com/webhooks/twilio/voice", {"CallSid": "CA1"}
        ),
    )
    assert status == 403


async def test_unknown_hook_is_404(harness: Harness) -> None:
    status, body = await harness.net.post_webhook(f"https://{PUBLIC}/webhooks/twilio/sms", {"CallSid": "CA1"})
    assert status == 404 and "sms" in body


async def test_draining_rejects(harness: Harness) -> None:
    harness.router.draining = True
    call = await harness.net.inbound_call()
    assert call.twiml is not None and call.twiml.rejected and call.twiml.stream_url is None


async def test_media_socket_for_unknown_or_unsigned_call_is_refused(harness: Harness) -> None:
    call = await harness.net.inbound_call(connect=False)
    assert call.twiml is not None
    forged = FakeCall(harness.net, "CAforged", "+1", "+2", "inbound")
    forged.twiml = type(call.twiml)(
        call.twiml.raw, call.twiml.verbs, f"wss://{PUBLIC}/ws/stream/not-ours", {}
    )
    await forged.connect_media()
    assert forged.handshake_status == 403 and forged.closed
    assert harness.router.rejections == [("twilio", "unknown_call")]
    await call.connect_media(signature="AAAA")
    assert call.handshake_status == 403
    assert harness.router.rejections[-1] == ("twilio", "signature")
    assert harness.router.connected == set()


async def test_media_round_trip_marks_clear_and_stop(harness: Harness) -> None:
    call = await harness.net.inbound_call(continuous=False)
    leg, events = await harness.router.leg("call-1")
    started = await next_event(events, StreamStarted)
    assert started.stream_id == call.stream_sid and started.carrier_call_id == call.call_sid
    assert started.parameters == {"call_id": "call-1", "agent": "receptionist"}

    # Caller → agent.
    speech = bytes(range(160)) * 3
    await call.say(speech)
    heard = b"".join([(await next_event(events, CallerAudio)).payload for _ in range(3)])
    assert heard == speech

    # Agent → caller: 160-byte frames, a partial frame waits, a mark sends it as is (no silence padding).
    await leg.send_audio(b"\x10" * 400)
    await call.wait_for_audio(320)
    assert call.media_frame_sizes == [160, 160]
    await leg.send_mark("m1")
    assert await next_event(events, MarkPlayed) == MarkPlayed("m1")
    assert call.media_frame_sizes == [160, 160, 80]
    assert bytes(call.played) == b"\x10" * 400

    # Barge-in: 2 s queued, clear drops it and Twilio echoes the pending mark.
    await leg.send_audio(b"\x20" * 16000)
    await leg.send_mark("m2")
    await call.wait_for_audio(400 + 320, played=True)
    await leg.clear()
    await call.wait_for_clear()
    assert await next_event(events, MarkPlayed) == MarkPlayed("m2")
    assert len(call.played) < 400 + 16000 and call.buffered_bytes == 0
    assert set(call.media_frame_sizes[3:]) == {160} and call.violations == []

    await call.send_dtmf("5")
    assert await next_event(events, CallerDtmf) == CallerDtmf("5")
    await call.stop()
    assert await next_event(events, StreamStopped) == StreamStopped("stop")


async def test_malformed_frames_are_counted_and_the_call_survives(harness: Harness) -> None:
    call = await harness.net.inbound_call(continuous=False)
    _, events = await harness.router.leg("call-1")
    await next_event(events, StreamStarted)
    await call.send_raw("not json at all")
    await call.send_raw('{"event": "media", "media": {"payload": "@@@"}}')
    await call.send_raw('{"event": "teleport"}')
    await call.send_dtmf("9")
    assert await next_event(events, CallerDtmf) == CallerDtmf("9")
    assert harness.router.bad_frames == 3
    assert harness.router.bad_frame_reasons == ["not_json", "bad_audio", "unknown_event"]
    await call.say(b"\x00" * 160)
    assert (await next_event(events, CallerAudio)).payload == b"\x00" * 160


async def test_caller_hangup_without_stop_ends_the_leg(harness: Harness) -> None:
    call = await harness.net.inbound_call(continuous=False)
    _, events = await harness.router.leg("call-1")
    await next_event(events, StreamStarted)
    await call.close()
    assert isinstance(await next_event(events, StreamStopped), StreamStopped)


async def test_media_socket_with_another_calls_parameters_is_refused(harness: Harness) -> None:
    call = await harness.net.inbound_call(connect=False)
    await call.connect_media(custom_parameters={"call_id": "call-99"})
    await call.wait_closed()
    assert call.close_code == 1008
    assert harness.router.rejections == [("twilio", "call_id_mismatch")]


async def test_status_amd_and_recording_callbacks(harness: Harness) -> None:
    call = await harness.net.inbound_call(continuous=False)
    assert await call.post_status("completed", duration_secs=42) == 204
    call_id, status, detail = harness.router.statuses[-1]
    assert (call_id, status) == ("call-1", "completed")
    assert detail is not None and detail["duration_secs"] == "42" and detail["call_sid"] == call.call_sid
    await call.post_status("in-progress")
    assert harness.router.statuses[-1][1] == "in_progress"
    code = await call.post_recording(
        f"https://{PUBLIC}/webhooks/twilio/recording", "https://api.twilio.com/rec/RE1", duration_secs=7
    )
    assert code == 204 and harness.router.recordings == [("call-1", "https://api.twilio.com/rec/RE1", 7.0)]
    await call.stop()


# ------------------------------------------------------------------ REST


async def test_outbound_dial_answer_amd_hangup(harness: Harness) -> None:
    sid = await harness.carrier.dial(
        DialRequest("out-7", "+15550009999", "+15550001234", machine_detection=True)
    )
    created = await harness.rest.wait_for_request(lambda r: r.path.endswith("/Calls.json"))
    assert created.get("To") == "+15550009999" and created.get("From") == "+15550001234"
    assert created.get("Url") == f"https://{PUBLIC}/webhooks/twilio/voice?call_id=out-7"
    assert created.get("StatusCallback") == f"https://{PUBLIC}/webhooks/twilio/status?call_id=out-7"
    assert created.getall("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert created.get("MachineDetection") == "DetectMessageEnd" and created.get("AsyncAmd") == "true"
    assert created.get("AsyncAmdStatusCallback") == f"https://{PUBLIC}/webhooks/twilio/amd?call_id=out-7"

    call = await harness.net.answer_outbound(continuous=False)
    assert call.call_sid == sid
    admitted = harness.router.issued["out-7"]
    assert (
        admitted.direction == "outbound" and admitted.call_id == "out-7" and admitted.carrier_call_id == sid
    )
    _, events = await harness.router.leg("out-7")
    assert (await next_event(events, StreamStarted)).parameters["call_id"] == "out-7"
    assert await call.post_amd("machine_end_beep") == 204
    assert harness.router.machines == [("out-7", "machine_end_beep")]

    await harness.carrier.start_recording(sid)
    recording = await harness.rest.wait_for_request(lambda r: r.path.endswith("/Recordings.json"))
    assert (
        recording.get("RecordingStatusCallback")
        == f"https://{PUBLIC}/webhooks/twilio/recording?call_id=out-7"
    )

    await harness.carrier.hangup(sid)
    assert harness.rest.calls[sid].updates[-1] == [("Status", "completed")]
    assert isinstance(await next_event(events, StreamStopped), StreamStopped)
    async with asyncio.timeout(TIMEOUT):
        while not any(s[1] == "completed" for s in harness.router.statuses):
            harness.router.changed.clear()
            await harness.router.changed.wait()
    assert harness.router.statuses[-1][0] == "out-7"


async def test_transfer_updates_the_call_with_dial_twiml(harness: Harness) -> None:
    call = await harness.net.inbound_call(continuous=False)
    _, events = await harness.router.leg("call-1")
    await next_event(events, StreamStarted)
    await harness.carrier.transfer(call.call_sid, "+15550009999")
    update = await harness.rest.wait_for_request(lambda r: r.get("Twiml") is not None)
    assert "<Dial>+15550009999</Dial>" in (update.get("Twiml") or "")
    assert isinstance(await next_event(events, StreamStopped), StreamStopped)
    assert call.transferred_to == "+15550009999"


async def test_rest_errors_map_to_the_exception_tree(harness: Harness) -> None:
    harness.rest.fail_next(401)
    with pytest.raises(ProviderAuthError, match="HTTP 401 error 20003: Authenticate"):
        await harness.carrier.check()
    before = len(harness.rest.requests)
    harness.rest.fail_next(500, path_contains="Calls.json")
    sid = await harness.carrier.dial(DialRequest("c-retry", "+15550009999", "+15550001234"))
    assert sid.startswith("CA")
    assert [r.status for r in harness.rest.requests[before:]] == [500, 201]

    harness.rest.fail_next(503, times=3)
    with pytest.raises(ProviderConnectionError, match="HTTP 503"):
        await harness.carrier.hangup(sid)
    harness.rest.fail_next(429, times=1)
    await harness.carrier.hangup(sid)
    with pytest.raises(ProviderError, match="21201") as info:
        await harness.carrier.dial(DialRequest("c-bad", "", "+15550001234"))
    assert not info.value.retryable and info.value.provider == "twilio"
    with pytest.raises(ProviderError, match="20404"):
        await harness.carrier.hangup("CAunknown")
    await harness.carrier.check()


async def test_wrong_credentials_and_unreachable_api() -> None:
    async with FakeTwilioRest() as rest:
        options = Options(account_sid=rest.account_sid, auth_token=SecretStr("wrong"), base_url=rest.base_url)
        async with SPEC.build(options, BuildContext(public_host=PUBLIC)) as carrier:
            assert SPEC.check is not None
            with pytest.raises(ProviderAuthError, match="check account_sid and auth_token"):
                await SPEC.check(carrier)
        port = rest.port
    options = Options(
        account_sid="AC1",
        auth_token=SecretStr("t"),
        base_url=f"http://127.0.0.1:{port}",
        retry_backoff_secs=0.01,
    )
    async with SPEC.build(options, BuildContext(public_host=PUBLIC)) as carrier:
        with pytest.raises(ProviderConnectionError, match="Twilio GET"):
            await carrier.check()


async def test_configure_number(harness: Harness) -> None:
    pn = harness.rest.add_number("+15550001234")
    assert (
        await harness.carrier.configure_number("+15550001234", f"https://{PUBLIC}/webhooks/twilio/voice")
        == pn
    )
    assert harness.rest.numbers[pn]["voice_url"] == f"https://{PUBLIC}/webhooks/twilio/voice"
    with pytest.raises(ProviderError, match=r"\+15559999999"):
        await harness.carrier.configure_number("+15559999999", "https://x/y")


@dataclass
class StaticHost:
    """A tunnel that never moves (the graph only reads its public host here)."""

    public_host: str

    def subscribe(self, callback: Any) -> Any:
        return lambda: None


async def test_a_tunnel_points_the_number_at_the_voice_route_the_spec_mounts() -> None:
    from patterd.config import load_config_text
    from patterd.graph import build_graph
    from patterd.plugins import load_registry

    async with FakeTwilioRest() as rest:
        pn = rest.add_number("+15550001234")
        text = f"""
carrier: {{type: twilio, account_sid: {rest.account_sid}, auth_token: {rest.auth_token}, base_url: "{rest.base_url}"}}
phone_number: "+15550001234"
tunnel: {{type: static, hostname: gw.example.com}}
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script, fallback: "Sorry?"}}
    tts: {{type: offline}}
"""
        registry = load_registry()
        config = load_config_text(text, registry, environ={})
        tunnel = StaticHost("gw.example.com")
        graph = await build_graph(config, registry, local_url="http://127.0.0.1:0", tunnel=tunnel)
        try:
            assert rest.numbers[pn]["voice_url"] == "https://gw.example.com/webhooks/twilio/voice"
        finally:
            await graph.aclose()
