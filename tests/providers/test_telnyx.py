"""The Telnyx carrier behind a real Starlette app on Hypercorn, driven by the fake Telnyx over loopback."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from nacl.signing import SigningKey
from pydantic import ValidationError

from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimitError,
)
from patterd.protocols import telnyx as proto
from patterd.protocols.audio import FRAME_BYTES, read_wav_ulaw8k, ulaw_to_pcm16
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
from patterd.providers.telnyx import SPEC, UNAUTHENTICATED_WARNING, TelnyxCarrier, TelnyxOptions
from tests.fakes.telnyx import Callee, FakeCall, FakeTelnyx
from tests.serving import carrier_app, serve_app

PUBLIC_HOST = "voice.example.test"
CALLER = "+15550001111"
OUR_NUMBER = "+15550001234"


@pytest.fixture(scope="session")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """'hello' spoken by espeak-ng, as 8 kHz μ-law."""
    wav = tmp_path_factory.mktemp("audio") / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello"], check=True, capture_output=True)
    return read_wav_ulaw8k(Path(wav))


def tone(ms: int, hz: int = 440) -> bytes:
    """A sine tone as μ-law (the agent's 'greeting')."""
    from patterd.protocols.audio import pcm16_to_ulaw

    t = np.arange(8 * ms) / 8000
    pcm = (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()
    return pcm16_to_ulaw(pcm)


@dataclass
class ScriptedRouter:
    """A small switchboard for tests: admits calls, plays a greeting, records what the carrier reports."""

    greeting: bytes = b""
    draining: bool = False
    clear_on_dtmf: str | None = None
    admitted: list[InboundCall] = field(default_factory=list)
    awaiting_media: set[str] = field(default_factory=set)
    by_carrier_id: dict[str, str] = field(default_factory=dict)
    statuses: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    amd: list[tuple[str, str]] = field(default_factory=list)
    recordings: list[tuple[str, str, float | None]] = field(default_factory=list)
    rejections: list[tuple[str, str]] = field(default_factory=list)
    bad_frames: int = 0
    bad_frame_reasons: list[str] = field(default_factory=list)
    events: dict[str, list[MediaEvent]] = field(default_factory=dict)
    legs: dict[str, CarrierLeg] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async def loop() -> None:
            while not predicate():
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def admit(self, call: InboundCall) -> Admission | None:
        if self.draining:
            return None
        call_id = f"call-{len(self.admitted) + 1}"
        self.admitted.append(call)
        self.awaiting_media.add(call_id)
        self.by_carrier_id[call.carrier_call_id] = call_id
        self._notify()
        return Admission(call_id, "receptionist")

    def expect_outbound(self, call_id: str) -> None:
        self.awaiting_media.add(call_id)

    def expects_media(self, call_id: str) -> bool:
        return call_id in self.awaiting_media

    def adopts_media(self) -> bool:
        return False  # one process, no cluster secret

    async def admit_media(self, call_id: str, token: str | None) -> str | None:
        return None if self.expects_media(call_id) else "unknown_call"

    async def run_media(self, call_id: str, leg: CarrierLeg) -> None:
        self.awaiting_media.discard(call_id)
        self.legs[call_id] = leg
        received = self.events.setdefault(call_id, [])
        async for event in leg.events():
            received.append(event)
            if isinstance(event, StreamStarted) and self.greeting:
                await leg.send_audio(self.greeting)
                await leg.send_mark("greeting")
            if isinstance(event, CallerDtmf) and event.digit == self.clear_on_dtmf:
                await leg.clear()
            self._notify()
        self.finished.add(call_id)
        self._notify()

    def call_id_for(self, carrier: str, carrier_call_id: str) -> str | None:
        return self.by_carrier_id.get(carrier_call_id)

    def carrier_status(self, call_id: str, status: str, detail: Mapping[str, Any] | None = None) -> None:
        self.statuses.append((call_id, status, dict(detail or {})))
        self._notify()

    def machine_detected(self, call_id: str, answered_by: str) -> None:
        self.amd.append((call_id, answered_by))
        self._notify()

    def recording_ready(self, call_id: str, url: str, duration_secs: float | None = None) -> None:
        self.recordings.append((call_id, url, duration_secs))
        self._notify()

    def count_rejection(self, carrier: str, reason: str) -> None:
        self.rejections.append((carrier, reason))
        self._notify()

    def count_bad_frame(self, carrier: str, reason: str) -> None:
        self.bad_frames += 1
        self.bad_frame_reasons.append(reason)
        self._notify()

    def caller_audio(self, call_id: str) -> bytes:
        return b"".join(e.payload for e in self.events.get(call_id, []) if isinstance(e, CallerAudio))


@dataclass
class Harness:
    fake: FakeTelnyx
    carrier: TelnyxCarrier
    router: ScriptedRouter
    base: str  # the daemon's http base


async def start_harness(stack: AsyncExitStack, router: ScriptedRouter, **option_overrides: Any) -> Harness:
    fake = await stack.enter_async_context(FakeTelnyx())
    settings: dict[str, Any] = {
        "api_key": fake.api_key,
        "connection_id": fake.connection_id,
        "public_key": fake.public_key_b64,
        "base_url": fake.base_url,
        "retry_backoff_ms": 1,
    }
    options = TelnyxOptions(**(settings | option_overrides))
    carrier: TelnyxCarrier = await stack.enter_async_context(
        SPEC.build(options, BuildContext(public_host=PUBLIC_HOST))
    )

    app = carrier_app(carrier, router, "/webhooks/telnyx/{hook}", "/ws/telnyx/stream/{call_id}")
    base_url = await stack.enter_async_context(serve_app(app))
    fake.webhook_base = base_url
    return Harness(fake, carrier, router, fake.webhook_base)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def inbound_call(h: Harness, audio: bytes = b"") -> tuple[FakeCall, str]:
    call = await h.fake.place_call(CALLER, OUR_NUMBER, audio=audio)
    await h.fake.wait_command("answer", call.call_control_id)
    await asyncio.wait_for(call.stream_open.wait(), 5)
    return call, h.router.by_carrier_id[call.call_control_id]


# ---------------------------------------------------------------- inbound


async def test_inbound_call_answers_with_bidirectional_pcmu_stream_and_round_trips_media(
    stack: AsyncExitStack, spoken: bytes
) -> None:
    greeting = tone(300)
    h = await start_harness(stack, ScriptedRouter(greeting=greeting))
    assert isinstance(h.carrier, Carrier)
    call, call_id = await inbound_call(h, audio=spoken)

    assert h.router.admitted == [InboundCall("telnyx", call.call_control_id, CALLER, OUR_NUMBER)]
    answer = await h.fake.wait_command("answer", call.call_control_id)
    initiated = h.fake.webhooks[0]
    assert answer.body == {
        "stream_url": f"wss://{PUBLIC_HOST}/ws/telnyx/stream/{call_id}",
        "stream_track": "inbound_track",
        "stream_codec": "PCMU",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
        "client_state": proto.encode_client_state(call_id),
        "command_id": proto.command_id_for(initiated.event_id, "answer"),
    }
    assert proto.decode_client_state(answer.body["client_state"]) == call_id

    # Caller → agent: the spoken WAV arrives intact, in order, as 160-byte frames.
    await h.router.until(lambda: len(h.router.caller_audio(call_id)) >= len(spoken), timeout=5)
    started = h.router.events[call_id][0]
    assert isinstance(started, StreamStarted)
    assert started.carrier_call_id == call.call_control_id
    assert started.parameters["call_id"] == call_id
    assert h.router.caller_audio(call_id)[: len(spoken)] == spoken

    # Agent → caller: the greeting plays in real time and the mark comes back after it.
    t0 = time.monotonic()
    assert await call.wait_marks(1) == ["greeting"]
    played_after = time.monotonic() - t0
    assert bytes(call.heard[: len(greeting)]) == greeting
    assert all(f["event"] in ("media", "mark") for f in call.frames_from_daemon)
    media_frames = [
        base64.b64decode(f["media"]["payload"]) for f in call.frames_from_daemon if f["event"] == "media"
    ]
    assert {len(frame) for frame in media_frames} == {FRAME_BYTES}
    await h.router.until(lambda: any(isinstance(e, MarkPlayed) for e in h.router.events[call_id]))
    assert played_after < 1.0

    # The caller hangs up: the stream stops, the session ends, the status maps from hangup_cause.
    await call.hangup("normal_clearing")
    await h.router.until(lambda: call_id in h.router.finished and bool(h.router.statuses))
    assert isinstance(h.router.events[call_id][-1], StreamStopped)
    assert h.router.statuses == [
        (
            call_id,
            "completed",
            {"hangup_cause": "normal_clearing", "hangup_source": "caller", "sip_hangup_cause": "200"},
        )
    ]
    assert h.router.rejections == []
    assert call.violations == []
    assert len(call.speech_started) == 1 and len(call.media_times) == len(media_frames)


async def test_dtmf_clear_and_marks_returned_on_barge_in(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter(greeting=tone(3000), clear_on_dtmf="5"))
    call, call_id = await inbound_call(h)
    await call.wait_heard(FRAME_BYTES * 5)
    await call.press("5")
    # clear returns the queued mark at once, long before the 3 s greeting could have played.
    assert await call.wait_marks(1, timeout=2) == ["greeting"]
    assert call.clears == 1 and len(call.clear_times) == 1
    assert call.violations == []
    await h.router.until(lambda: CallerDtmf("5") in h.router.events[call_id])
    assert len(call.heard) < len(tone(3000)) // 2
    await call.hangup()


async def test_signature_missing_bad_stale_and_future_are_refused_and_counted(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter())
    call = FakeCall(h.fake, "v3:forged", "incoming", CALLER, OUR_NUMBER)
    body = h.fake.envelope(call, "call.initiated", {"state": "parked"})
    forged = SigningKey.generate().sign(f"{int(time.time())}|".encode() + body).signature
    cases = {
        "missing_headers": {"content-type": "application/json"},
        "bad_signature": {**h.fake.sign(body), "telnyx-signature-ed25519": base64.b64encode(forged).decode()},
        "stale_timestamp": h.fake.sign(body, timestamp=int(time.time()) - 301),
    }
    for reason, headers in cases.items():
        sent = await h.fake.post_webhook(body, headers=headers)
        assert sent.status == 403, reason
    future = await h.fake.post_webhook(body, timestamp=int(time.time()) + 600)
    assert future.status == 403
    assert h.router.rejections == [
        ("telnyx", "missing_headers"),
        ("telnyx", "bad_signature"),
        ("telnyx", "stale_timestamp"),
        ("telnyx", "stale_timestamp"),
    ]
    assert h.router.admitted == []
    fresh = await h.fake.post_webhook(body)  # the same body, properly signed now, is accepted
    assert fresh.status == 200


async def test_retried_webhook_answers_once(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter())
    call, _ = await inbound_call(h)
    initiated = h.fake.webhooks[0]
    assert (await h.fake.resend(initiated)).status == 200
    assert (await h.fake.resend(initiated)).status == 200
    await h.carrier.settle()
    assert len(h.fake.commands_for("answer", include_duplicates=True)) == 1
    assert len(h.router.admitted) == 1
    await call.hangup()


async def test_command_id_is_deterministic_so_telnyx_dedupes_across_restarts(stack: AsyncExitStack) -> None:
    """A second daemon (no local memory) receiving the same retried event sends the same command_id."""
    h = await start_harness(stack, ScriptedRouter())
    call, _ = await inbound_call(h)
    first = await h.fake.wait_command("answer", call.call_control_id)
    options = h.carrier.options
    async with SPEC.build(options, BuildContext(public_host=PUBLIC_HOST)) as fresh:
        router = ScriptedRouter()
        router.by_carrier_id = dict(h.router.by_carrier_id)
        fresh._dispatch(proto.parse_webhook(h.fake.webhooks[0].body), router)
        await fresh.settle()
    answers = h.fake.commands_for("answer", include_duplicates=True)
    assert [a.command_id for a in answers] == [first.command_id, first.command_id]
    assert [a.duplicate for a in answers] == [False, True]
    await call.hangup()


async def test_draining_rejects_the_telnyx_way(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter(draining=True))
    call = await h.fake.place_call(CALLER, OUR_NUMBER)
    reject = await h.fake.wait_command("reject", call.call_control_id)
    assert reject.body["cause"] == "CALL_REJECTED"
    assert reject.command_id == proto.command_id_for(h.fake.webhooks[0].event_id, "reject")
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.hangup_cause == "call_rejected"
    assert h.fake.commands_for("answer") == []
    assert not call.stream_open.is_set()


async def test_media_websocket_for_unknown_call_is_refused(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(h.base.replace("http", "ws") + "/ws/telnyx/stream/not-ours")
    assert refused.value.status == 403
    assert h.router.rejections == [("telnyx", "unexpected_media")]


async def test_malformed_and_error_frames_do_not_end_the_call(stack: AsyncExitStack, spoken: bytes) -> None:
    h = await start_harness(stack, ScriptedRouter())
    call, call_id = await inbound_call(h)
    await call.send_raw("this is not json")
    await call.send_raw('{"event": "media", "media": {"payload": "%%%"}}')
    await call.send_error_frame(100003, "malformed_frame", "test")
    call.say(spoken)
    await h.router.until(lambda: h.router.bad_frames == 2)
    assert h.router.bad_frame_reasons == ["not_json", "bad_audio"]
    await h.router.until(lambda: spoken[:800] in h.router.caller_audio(call_id))
    assert call_id not in h.router.finished
    await call.hangup()
    await h.router.until(lambda: call_id in h.router.finished)


async def test_pcma_stream_is_transcoded_to_ulaw(stack: AsyncExitStack, spoken: bytes) -> None:
    h = await start_harness(stack, ScriptedRouter())
    h.fake.media_encoding = "PCMA"
    call, call_id = await inbound_call(h, audio=spoken)
    await h.router.until(lambda: len(h.router.caller_audio(call_id)) >= len(spoken))
    got = np.frombuffer(ulaw_to_pcm16(h.router.caller_audio(call_id)[: len(spoken)]), "<i2").astype(float)
    want = np.frombuffer(ulaw_to_pcm16(spoken), "<i2").astype(float)
    assert np.sqrt(np.mean((got - want) ** 2)) < 0.05 * np.sqrt(
        np.mean(want**2)
    )  # G.711 round trip, not identity
    await call.hangup()


# ---------------------------------------------------------------- outbound


@pytest.mark.parametrize(
    ("answer", "expected_amd"),
    [
        ("machine", [("out-1", "machine_end_beep")]),  # greeting_end: one verdict, after the beep
        ("human", [("out-1", "human")]),
    ],
)
async def test_outbound_dial_with_amd_streams_and_reports_machine(
    stack: AsyncExitStack, answer: str, expected_amd: list[tuple[str, str]]
) -> None:
    h = await start_harness(stack, ScriptedRouter(greeting=tone(100)))
    h.fake.callee("+15557654321", Callee(answer=answer))  # type: ignore[arg-type]
    h.router.expect_outbound("out-1")
    ccid = await h.carrier.dial(DialRequest("out-1", "+15557654321", OUR_NUMBER, machine_detection=True))
    dial = await h.fake.wait_command("dial")
    assert dial.call_control_id == ccid
    assert dial.body == {
        "connection_id": h.fake.connection_id,
        "to": "+15557654321",
        "from": OUR_NUMBER,
        "webhook_url": f"https://{PUBLIC_HOST}/webhooks/telnyx/voice",
        "client_state": proto.encode_client_state("out-1"),
        "command_id": proto.command_id_for("out-1", "dial"),
        "answering_machine_detection": "greeting_end",
        "stream_url": f"wss://{PUBLIC_HOST}/ws/telnyx/stream/out-1",
        "stream_track": "inbound_track",
        "stream_codec": "PCMU",
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": "PCMU",
    }
    await h.router.until(lambda: h.router.amd == expected_amd and "out-1" in h.router.events)
    call = h.fake.calls[ccid]
    await call.wait_marks(1)
    await h.carrier.hangup(ccid)
    hangup = await h.fake.wait_command("hangup", ccid)
    assert hangup.command_id
    await h.router.until(lambda: "out-1" in h.router.finished and bool(h.router.statuses))
    assert h.router.statuses[0][:2] == ("out-1", "completed")
    await h.carrier.hangup(ccid)  # hanging up an ended call is not an error (Telnyx 422 code 90018)


@pytest.mark.parametrize(
    ("answer", "status"), [("busy", "busy"), ("no-answer", "no-answer"), ("reject", "busy")]
)
async def test_outbound_not_answered_maps_hangup_cause(
    stack: AsyncExitStack, answer: str, status: str
) -> None:
    h = await start_harness(stack, ScriptedRouter())
    h.fake.callee("+15557654321", Callee(answer=answer))  # type: ignore[arg-type]
    await h.carrier.dial(DialRequest("out-2", "+15557654321", OUR_NUMBER))
    await h.router.until(lambda: bool(h.router.statuses))
    assert h.router.statuses[0][:2] == ("out-2", status)
    assert "answering_machine_detection" not in h.fake.commands_for("dial")[0].body


async def test_outbound_without_stream_on_dial_starts_streaming_on_answer(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter(), stream_on_dial=False)
    h.router.expect_outbound("out-3")
    ccid = await h.carrier.dial(DialRequest("out-3", "+15557654321", OUR_NUMBER))
    assert "stream_url" not in h.fake.commands_for("dial")[0].body
    start = await h.fake.wait_command("streaming_start", ccid)
    assert start.body["stream_url"] == f"wss://{PUBLIC_HOST}/ws/telnyx/stream/out-3"
    assert start.body["stream_bidirectional_mode"] == "rtp"
    await h.router.until(lambda: "out-3" in h.router.events)
    await h.fake.calls[ccid].hangup()


async def test_recording_transfer_and_dtmf_commands(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter())
    call, call_id = await inbound_call(h)
    await h.carrier.start_recording(call.call_control_id)
    await h.carrier.send_dtmf(call.call_control_id, "12#")
    await h.carrier.transfer(call.call_control_id, "+15550009999")
    assert h.fake.commands_for("record_start")[0].body["format"] == "mp3"
    assert h.fake.commands_for("record_start")[0].body["channels"] == "dual"
    assert h.fake.commands_for("send_dtmf")[0].body["digits"] == "12#"
    assert h.fake.commands_for("transfer")[0].body["to"] == "+15550009999"
    await h.carrier.stop_recording(call.call_control_id)
    await h.router.until(lambda: bool(h.router.recordings))
    cid, url, duration = h.router.recordings[0]
    assert (cid, duration) == (call_id, 12.5)
    assert url.startswith(h.fake.base_url) and url.endswith(".mp3")
    await call.hangup()


# ---------------------------------------------------------------- REST errors


async def test_rest_errors_map_to_provider_errors_and_retry_with_the_same_command_id(
    stack: AsyncExitStack,
) -> None:
    h = await start_harness(stack, ScriptedRouter())
    call, _ = await inbound_call(h)
    ccid = call.call_control_id

    h.fake.fail("transfer", 500, times=2)
    await h.carrier.transfer(ccid, "+15550009999")
    tries = [a for a in h.fake.attempts if a.action == "transfer"]
    assert [t.status for t in tries] == [500, 500, 200]
    assert len({t.command_id for t in tries}) == 1

    h.fake.fail("send_dtmf", 429, times=3)
    with pytest.raises(ProviderRateLimitError):
        await h.carrier.send_dtmf(ccid, "1")

    h.fake.fail("record_start", 401)
    with pytest.raises(ProviderAuthError, match="Authentication failed"):
        await h.carrier.start_recording(ccid)
    assert len([a for a in h.fake.attempts if a.action == "record_start"]) == 1  # auth errors are not retried

    h.fake.fail("record_stop", 422, detail="Recording not started")
    with pytest.raises(ProviderError, match=r"HTTP 422: Recording not started \(code 10007\)"):
        await h.carrier.stop_recording(ccid)

    await call.hangup()
    await asyncio.wait_for(call.ended.wait(), 5)
    with pytest.raises(ProviderError, match="90018"):
        await h.carrier.transfer(ccid, "+15550009999")


async def test_network_errors_are_connection_errors(stack: AsyncExitStack) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    options = TelnyxOptions(api_key="k", connection_id="c", base_url=dead, retry_backoff_ms=1)
    async with SPEC.build(options, BuildContext(public_host=PUBLIC_HOST)) as carrier:
        with pytest.raises(ProviderConnectionError, match="cannot reach"):
            await carrier.hangup("v3:x")


async def test_check_probes_the_call_control_application(stack: AsyncExitStack) -> None:
    h = await start_harness(stack, ScriptedRouter())
    assert SPEC.check is not None
    await SPEC.check(h.carrier)
    assert h.fake.commands_for("get_application")
    wrong = TelnyxOptions(
        api_key=h.fake.api_key,
        connection_id="999",
        base_url=h.fake.base_url,
        public_key=h.fake.public_key_b64,
    )
    async with SPEC.build(wrong, BuildContext(public_host=PUBLIC_HOST)) as carrier:
        with pytest.raises(ProviderError, match="HTTP 404"):
            await SPEC.check(carrier)
    bad_key = TelnyxOptions(api_key="nope", connection_id=h.fake.connection_id, base_url=h.fake.base_url)
    async with SPEC.build(bad_key, BuildContext(public_host=PUBLIC_HOST)) as carrier:
        with pytest.raises(ProviderAuthError):
            await SPEC.check(carrier)


# ---------------------------------------------------------------- options


def test_options_require_api_key_and_connection_id(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TELNYX_API_KEY", "TELNYX_CONNECTION_ID", "TELNYX_PUBLIC_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValidationError, match="Telnyx carrier requires api_key and connection_id"):
        TelnyxOptions()
    monkeypatch.setenv("TELNYX_API_KEY", "KEYabc")
    monkeypatch.setenv("TELNYX_CONNECTION_ID", "123")
    options = TelnyxOptions()
    assert options.api_key is not None and options.api_key.get_secret_value() == "KEYabc"
    assert options.public_key is None
    with pytest.raises(ValidationError, match="TELNYX_PUBLIC_KEY"):
        TelnyxOptions(public_key="not-a-key")
    with pytest.raises(ValidationError):
        TelnyxOptions(unknown_key=1)  # type: ignore[call-arg]


async def test_without_public_key_warns_and_accepts_unsigned_webhooks(stack: AsyncExitStack) -> None:
    router = ScriptedRouter()
    h = await start_harness(stack, router, public_key=None)
    assert h.carrier.warnings == [UNAUTHENTICATED_WARNING]
    assert h.carrier.options.config_warnings() == [UNAUTHENTICATED_WARNING]
    call = FakeCall(h.fake, "v3:unsigned", "incoming", CALLER, OUR_NUMBER)
    h.fake.calls[call.call_control_id] = call
    sent = await h.fake.post_webhook(h.fake.envelope(call, "call.initiated", {"state": "parked"}), headers={})
    assert sent.status == 200
    await h.fake.wait_command("answer", call.call_control_id)
    await asyncio.wait_for(call.stream_open.wait(), 5)
    await call.hangup()
