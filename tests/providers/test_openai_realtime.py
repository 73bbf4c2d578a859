"""The OpenAI Realtime engine against the fake Realtime server, with an in-test call (ear, tools, events)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest

from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols.audio import FRAME_BYTES, pcm16_to_ulaw, read_wav_ulaw8k, silence_ulaw
from patterd.protocols.events import BargeIn, CallEvent, CallFailed, TranscriptLine, Usage
from patterd.providers.kinds import EngineEvent, ToolSchema, UserTurnEnded
from patterd.providers.openai_realtime import SPEC, OpenAIRealtimeOptions, RealtimeSession, check
from patterd.providers.spec import BuildContext
from tests.fakes.openai_realtime import CallTool, FakeRealtimeServer, Reply, Say

TIMEOUT = 10.0


class Ear:
    """The caller's ear: plays at real time (`realtime=True`) or instantly, and remembers what it got."""

    def __init__(self, clock: Clock, changed: asyncio.Event, realtime: bool = False) -> None:
        self.clock = clock
        self.changed = changed
        self.realtime = realtime
        self.chunks: list[tuple[str, float, float]] = []  # segment, start, seconds
        self.bytes_by_segment: dict[str, int] = {}
        self.first_audio_at: float | None = None
        self.interrupted_at: float | None = None
        self.bytes_after_interrupt = 0
        self._end = 0.0

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        now = self.clock.monotonic()
        if self.first_audio_at is None:
            self.first_audio_at = now
        if self.interrupted_at is not None and segment == self.interrupted_segment:
            self.bytes_after_interrupt += len(ulaw)
        self.bytes_by_segment[segment] = self.bytes_by_segment.get(segment, 0) + len(ulaw)
        if self.realtime:
            start = max(now, self._end)
            self._end = start + len(ulaw) / 8000
            self.chunks.append((segment, start, len(ulaw) / 8000))
        self.changed.set()

    interrupted_segment: str | None = None

    async def interrupt(self) -> tuple[str, int] | None:
        now = self.clock.monotonic()
        started = [c for c in self.chunks if c[1] <= now]
        self._end = now
        self.chunks = []
        self.changed.set()
        if not started:
            return None
        segment = started[-1][0]
        heard = sum(min(dur, now - start) for seg, start, dur in started if seg == segment)
        self.interrupted_at = now
        self.interrupted_segment = segment
        return segment, int(heard * 1000)

    async def drained(self) -> None:
        await asyncio.sleep(max(0.0, self._end - self.clock.monotonic()))

    @property
    def speaking(self) -> bool:
        return self.realtime and self.clock.monotonic() < self._end

    def played_ms(self) -> float:
        now = self.clock.monotonic()
        return sum(min(dur, now - start) * 1000 for _, start, dur in self.chunks if start <= now)


class Call:
    """An in-test CallContext: records events, runs scripted tools, notes speech ends."""

    def __init__(
        self,
        *,
        first_message: str | None = "Thanks for calling Acme.",
        tools: Sequence[ToolSchema] = (),
        tool_results: Mapping[str, str] | None = None,
        realtime_ear: bool = False,
    ) -> None:
        self.call_id = "call-1"
        self.agent_name = "receptionist"
        self.instructions = "You are a friendly receptionist."
        self.first_message = first_message
        self.tools = tools
        self.clock: Clock = SYSTEM_CLOCK
        self.changed = asyncio.Event()
        self.audio = Ear(self.clock, self.changed, realtime=realtime_ear)
        self.events: list[CallEvent] = []
        self.tool_calls: list[tuple[str, dict[str, Any]]] = []
        self.tool_results = dict(tool_results or {})
        self.speech_ends: list[float] = []

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        self.tool_calls.append((name, dict(arguments)))
        self.changed.set()
        return self.tool_results.get(name, '{"ok": true}')

    def emit(self, event: EngineEvent) -> None:
        if isinstance(event, UserTurnEnded):
            self.speech_ends.append(self.clock.monotonic() if event.at is None else event.at)
        else:
            self.events.append(event)
        self.changed.set()

    def new_event_fields(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "ts": datetime.now().astimezone()}

    def of(self, kind: type[CallEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def lines(self, role: str) -> list[TranscriptLine]:
        return [e for e in self.of(TranscriptLine) if e.role == role]

    async def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


def options(fake: FakeRealtimeServer, **extra: Any) -> OpenAIRealtimeOptions:
    values: dict[str, Any] = {"api_key": "sk-test", "base_url": fake.url, "retry_backoff_secs": 0.01, **extra}
    return OpenAIRealtimeOptions.model_validate(values)


@contextlib.asynccontextmanager
async def running(
    opts: OpenAIRealtimeOptions, call: Call
) -> AsyncIterator[tuple[RealtimeSession, asyncio.Task[None]]]:
    async with SPEC.build(opts, BuildContext()) as engine, engine.session(call) as session:
        task = asyncio.create_task(session.run())
        try:
            yield session, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@pytest.fixture(scope="module")
def spoken_ulaw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wav = Path(tmp_path_factory.mktemp("wav")) / "caller.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Where is my order?"], check=True, capture_output=True)
    return read_wav_ulaw8k(wav)


async def push_speech(
    session: RealtimeSession, ulaw: bytes, *, realtime: bool = False, silence_ms: int = 800
) -> None:
    """Push the caller's audio in 20 ms frames, then silence so the VAD ends the turn."""
    audio = ulaw + silence_ulaw(silence_ms)
    for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES):
        session.push_audio(audio[i : i + FRAME_BYTES])
        # Real time when the test needs it; otherwise just let the sender run.
        await asyncio.sleep(0.02 if realtime else 0)


# ------------------------------------------------------------------ options


def test_missing_api_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(pydantic.ValidationError, match=r"requires api_key \(set OPENAI_API_KEY\)"):
        OpenAIRealtimeOptions()


def test_options_defaults_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    opts = OpenAIRealtimeOptions()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "sk-env"
    assert opts.url() == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert opts.audio_format == "pcm" and opts.turn_detection is not None
    assert opts.turn_detection["type"] == "server_vad"
    with pytest.raises(pydantic.ValidationError):
        OpenAIRealtimeOptions.model_validate({"audio_format": "g711_ulaw"})


# ------------------------------------------------------------------ conversation


@pytest.mark.parametrize("audio_format", ["pcm", "pcmu"])
async def test_first_message_then_a_spoken_turn(audio_format: str, spoken_ulaw: bytes) -> None:
    replies = [Say("Thanks for calling Acme."), Say("Your order ships tomorrow.")]
    async with FakeRealtimeServer(replies=replies, transcripts=["Where is my order?"], pace=20) as fake:
        call = Call()
        async with running(options(fake, audio_format=audio_format), call) as (session, _):
            await call.until(lambda: len(call.lines("assistant")) == 1)
            assert call.lines("assistant")[0].text == "Thanks for calling Acme."
            assert (
                fake.response_requests[0] is not None
                and "Thanks for calling Acme." in fake.response_requests[0]
            )
            await push_speech(session, spoken_ulaw)
            await call.until(lambda: len(call.lines("assistant")) == 2)
            assert [line.text for line in call.lines("user")] == ["Where is my order?"]
            assert call.lines("assistant")[1].text == "Your order ships tomorrow."
            assert len(call.speech_ends) == 1
            usage = call.of(Usage)
            assert len(usage) == 2 and usage[0].provider == "openai_realtime"
            assert usage[0].quantities == {
                "input_text_tokens": 46,  # 110 minus the 64 cached text tokens
                "input_audio_tokens": 40,
                "cached_input_tokens": 64,
                "cached_tokens": 64,
                "output_text_tokens": 20,
                "output_audio_tokens": 60,
            }
    assert fake.errors == []
    fmt = fake.sessions[0]["audio"]["input"]["format"]
    assert fmt == ({"type": "audio/pcm", "rate": 24000} if audio_format == "pcm" else {"type": "audio/pcmu"})
    assert all("OpenAI-Beta" not in h for h in fake.handshakes)
    # Every caller frame arrived, transcoded to the session's format (6 bytes of PCM24 per μ-law byte).
    pushed = (len(spoken_ulaw) + 6400) // FRAME_BYTES * FRAME_BYTES
    expected = pushed * 6 if audio_format == "pcm" else pushed
    # soxr holds back its filter delay (a few ms) until more audio comes.
    assert expected - 6 * FRAME_BYTES <= fake.audio_bytes_in <= expected
    # The agent's audio reached the ear as 8 kHz μ-law: about the length of the rendered speech.
    assert sum(call.audio.bytes_by_segment.values()) > 8000


async def test_barge_in_cancels_and_truncates_at_played_ms(spoken_ulaw: bytes) -> None:
    long = "Our opening hours are nine to five on weekdays and ten to two on saturdays, closed on sundays."
    async with FakeRealtimeServer(replies=[Say(long)], transcripts=["wait"], pace=4) as fake:
        call = Call(first_message="Hello.", realtime_ear=True)
        call.first_message = None
        async with running(options(fake), call) as (session, _):
            session.push_text("What are your hours?")
            await call.until(lambda: call.audio.played_ms() > 600)
            await push_speech(session, spoken_ulaw, realtime=True, silence_ms=100)
            await call.until(lambda: bool(call.of(BargeIn)))
            await fake.wait_for(lambda: bool(fake.truncates) and fake.cancels >= 1)
            await call.until(lambda: bool(call.lines("assistant")))
    barge = call.of(BargeIn)[0]
    truncate = fake.truncates[0]
    assert truncate["audio_end_ms"] == barge.played_ms
    assert 600 < barge.played_ms < 3000
    assert barge.reaction_ms is not None and barge.reaction_ms < 100
    assert call.audio.bytes_after_interrupt == 0  # nothing of the cut item reached the caller afterwards
    line = call.lines("assistant")[0]
    assert line.interrupted and line.text and long.startswith(line.text)
    assert fake.errors == [] or all(e["code"] == "response_cancel_not_active" for e in fake.errors)


async def test_tool_call_round_trip() -> None:
    tools = [
        ToolSchema(
            "lookup_order",
            "Find an order",
            {"type": "object", "properties": {"order_id": {"type": "string"}}},
        )
    ]
    replies: list[Reply] = [
        Say("Hi."),
        CallTool("lookup_order", {"order_id": "42"}),
        Say("Order 42 ships tomorrow."),
    ]
    async with FakeRealtimeServer(replies=replies, pace=50) as fake:
        call = Call(first_message="Hi.", tools=tools, tool_results={"lookup_order": '{"status": "shipping"}'})
        async with running(options(fake), call) as (session, _):
            session.push_text("Where is order 42?")
            await call.until(
                lambda: any(line.text.startswith("Order 42") for line in call.lines("assistant"))
            )
    assert call.tool_calls == [("lookup_order", {"order_id": "42"})]
    assert [o["output"] for o in fake.tool_outputs] == ['{"status": "shipping"}']
    assert fake.sessions[0]["tools"][0]["name"] == "lookup_order"
    assert fake.user_texts == ["Where is order 42?"]
    assert fake.errors == []


async def test_dtmf_reaches_the_model_as_text() -> None:
    async with FakeRealtimeServer(replies=[Say("You pressed five.")], pace=50) as fake:
        call = Call(first_message=None)
        async with running(options(fake), call) as (session, _):
            await fake.wait_for(lambda: fake.connections == 1 and bool(fake.sessions))
            session.push_dtmf("5")
            await call.until(lambda: bool(call.lines("assistant")))
    assert fake.user_texts == ["caller pressed 5"]
    assert fake.received_types()[-1] == "response.create"


async def test_bad_and_unknown_frames_are_counted_not_fatal() -> None:
    async with FakeRealtimeServer(replies=[Say("Still here.")], pace=50) as fake:
        call = Call(first_message=None)
        async with running(options(fake), call) as (session, task):
            await fake.wait_for(lambda: bool(fake.sessions))
            await fake.inject("{not json")
            await fake.inject('{"type": "response.output_audio.delta", "delta": 5}')
            await fake.inject('{"type": "brand.new.event"}')
            session.push_text("hello")
            await call.until(lambda: bool(call.lines("assistant")))
            assert not task.done()
            assert session.bad_frames == 2 and session.unknown_events == 1


async def test_server_error_event_is_recorded() -> None:
    async with FakeRealtimeServer(pace=50) as fake:
        call = Call(first_message=None)
        async with running(options(fake), call):
            await fake.wait_for(lambda: bool(fake.sessions))
            await fake.inject(
                '{"type": "error", "event_id": "e1", "error": {"type": "invalid_request_error", "code": "x", "message": "bad"}}'
            )
            await call.until(lambda: bool(call.of(CallFailed)))
    assert "bad" in call.of(CallFailed)[0].message


# ------------------------------------------------------------------ failures


async def test_reconnects_after_a_drop_and_resends_session_update() -> None:
    async with FakeRealtimeServer(replies=[Say("Hi."), Say("Back again.")], pace=50) as fake:
        call = Call(first_message="Hi.")
        async with running(options(fake), call) as (session, task):
            await call.until(lambda: bool(call.lines("assistant")))
            await fake.drop_all()
            await fake.wait_for(lambda: fake.connections == 2 and len(fake.sessions) == 2)
            session.push_text("are you there?")
            await call.until(lambda: len(call.lines("assistant")) == 2)
            assert not task.done()
    assert session.connects == 2
    assert fake.response_requests.count(None) == 1  # the first message was not spoken twice
    # The new connection was given the conversation so far before the caller's next turn.
    assert fake.message_items[:2] == [("assistant", "Hi."), ("user", "are you there?")]
    assert not fake.errors, fake.errors  # the replayed items follow the documented schema


async def test_permanent_failure_raises_connection_error() -> None:
    async with FakeRealtimeServer(replies=[Say("Hi.")], pace=50) as fake:
        call = Call(first_message="Hi.")
        async with (
            SPEC.build(options(fake, max_retries=2), BuildContext()) as engine,
            engine.session(call) as session,
        ):
            task = asyncio.create_task(session.run())
            await call.until(lambda: bool(call.lines("assistant")))
            fake.refuse_status = 503
            await fake.drop_all()
            with pytest.raises(ProviderConnectionError, match="unreachable after 3 attempts"):
                await asyncio.wait_for(task, TIMEOUT)
    assert fake.connections == 1 and len(fake.handshakes) == 3  # the first, then max_retries retries


async def test_a_server_that_stops_answering_is_found_by_keepalive_and_reconnected() -> None:
    async with FakeRealtimeServer(replies=[Say("Hi.")], pace=50) as fake:
        call = Call(first_message="Hi.")
        async with running(options(fake, keepalive_secs=0.2), call) as (session, task):
            await call.until(lambda: bool(call.lines("assistant")))
            fake.freeze_all()  # TCP stays up; no data, no pongs
            # The new connection's session.update: the client noticed and reconnected by itself.
            await fake.wait_for(lambda: len(fake.sessions) == 2, TIMEOUT)
            assert session.connects == 2 and fake.connections == 2 and not task.done()


@pytest.mark.parametrize("turns", range(16))
async def test_a_cancel_landing_while_a_dropped_link_winds_down_ends_the_session(turns: int) -> None:
    # The call hangs up (cancels run()) `turns` loop turns after the engine link was cut: whichever
    # step of the teardown (receive loop, stopping the sender, closing, backoff) it lands in, run()
    # must end cancelled, without a reconnect that would keep a billed session open.
    async with FakeRealtimeServer(pace=50) as fake:
        call = Call(first_message=None)
        async with (
            SPEC.build(options(fake, retry_backoff_secs=0.02), BuildContext()) as engine,
            engine.session(call) as session,
        ):
            task = asyncio.create_task(session.run())
            await fake.wait_for(lambda: len(fake.sessions) == 1)
            for _ in range(5):
                session.push_audio(silence_ulaw(20))  # the sender has work in flight
            fake.drop(1)
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
            assert done and task.cancelled(), f"run() still going {TIMEOUT} s after its cancel"
    assert fake.connections <= 2 and session.connects == fake.connections


async def test_a_refused_voice_is_dropped_and_the_session_configured_without_it(spoken_ulaw: bytes) -> None:
    replies = [Say("Hi."), Say("Sure.")]
    async with FakeRealtimeServer(replies=replies, transcripts=["Where is my order?"], pace=20) as fake:
        call = Call(first_message="Hi.")
        opts = options(fake, voice="nova")  # a TTS voice, not a Realtime one (the contract's example)
        assert "'nova' is not a Realtime voice" in opts.config_warnings()[0]
        async with SPEC.build(opts, BuildContext()) as engine:
            assert engine.warnings == opts.config_warnings()  # the daemon logs them at start and reload
        async with running(opts, call) as (session, _):
            await fake.wait_for(lambda: len(fake.sessions) == 1, TIMEOUT)
            configured = fake.sessions[0]
            assert configured["instructions"] == call.instructions
            assert "voice" not in configured["audio"]["output"]
            refused = call.of(CallFailed)
            assert len(refused) == 1 and not refused[0].fatal and "'nova'" in refused[0].message
            await call.until(lambda: len(call.lines("assistant")) == 1)  # the greeting
            await push_speech(session, spoken_ulaw)
            await call.until(lambda: len(call.lines("assistant")) == 2)  # the conversation goes on
    assert fake.connections == 1 and [e["param"] for e in fake.errors] == ["session.audio.output.voice"]


async def test_any_other_refused_session_update_fails_the_call() -> None:
    async with FakeRealtimeServer() as fake:
        call = Call()
        opts = options(fake, turn_detection={"type": "server_vad", "silence_duration_ms": "soon"})
        async with SPEC.build(opts, BuildContext()) as engine, engine.session(call) as session:
            with pytest.raises(ProviderError, match="refused the session configuration"):
                await asyncio.wait_for(session.run(), TIMEOUT)
    assert fake.connections == 1 and fake.sessions == []  # not retried: it would fail the same way


def test_voice_warnings_suggest_the_nearest_voice_and_accept_custom_ids() -> None:
    assert "did you mean 'shimmer'" in OpenAIRealtimeOptions(api_key="k", voice="shimer").config_warnings()[0]
    assert OpenAIRealtimeOptions(api_key="k", voice="marin").config_warnings() == []
    assert OpenAIRealtimeOptions(api_key="k", voice="voice_1234").config_warnings() == []


async def test_bad_key_is_an_auth_error_not_retried() -> None:
    async with FakeRealtimeServer() as fake:
        call = Call()
        async with (
            SPEC.build(options(fake, api_key="sk-wrong"), BuildContext()) as engine,
            engine.session(call) as session,
        ):
            with pytest.raises(ProviderAuthError, match="HTTP 401"):
                await asyncio.wait_for(session.run(), TIMEOUT)
    assert fake.connections == 0 and len(fake.handshakes) == 1


async def test_check_probes_the_session() -> None:
    async with FakeRealtimeServer() as fake:
        async with SPEC.build(options(fake), BuildContext()) as engine:
            await check(engine)
        async with SPEC.build(options(fake, api_key="sk-wrong"), BuildContext()) as engine:
            with pytest.raises(ProviderAuthError):
                await check(engine)


class SteppedClock:
    """A clock the test moves by hand: caller frames are stamped with exactly known arrival times."""

    def __init__(self) -> None:
        self.t = 500.0

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime.now().astimezone()


async def test_turn_is_timed_from_the_last_loud_frame_sent_to_the_first_audio_back() -> None:
    # 440 Hz at a third of full scale: voiced for our estimate and for the fake server's VAD alike.
    tone = pcm16_to_ulaw(
        b"".join(
            int(10000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True)
            for i in range(160)
        )
    )
    async with FakeRealtimeServer(
        replies=[Say("Hello."), Say("We open at nine.")], transcripts=["hours?"]
    ) as fake:
        call = Call()
        clock = SteppedClock()
        call.clock = call.audio.clock = clock
        async with running(options(fake), call) as (session, _):
            await call.until(lambda: len(call.lines("assistant")) == 1)  # greeted: the session is live
            for _ in range(25):  # 500 ms of speech, then 700 ms of silence: all stamped before any reply
                clock.t += 0.02
                session.push_audio(tone)
            last_voiced = clock.t
            for _ in range(35):
                clock.t += 0.02
                session.push_audio(silence_ulaw(20))
            await call.until(lambda: len(call.lines("assistant")) == 2)
    greeting, answer = call.lines("assistant")
    assert greeting.engine_ms is None  # no caller turn before it
    assert call.speech_ends == [last_voiced]  # not the server's speech_stopped, 500 ms of silence later
    # The clock stood still from the last silent frame on, so the engine's share is exactly the silence.
    assert answer.engine_ms == 700.0


async def test_the_agents_words_stream_as_partial_lines_before_the_final_one() -> None:
    from itertools import pairwise

    from patterd.protocols.events import TranscriptPartial

    async with FakeRealtimeServer(replies=[Say("Thanks for calling Acme, how can I help?")], pace=20) as fake:
        call = Call()
        async with running(options(fake), call):
            await call.until(lambda: len(call.lines("assistant")) == 1)
        partials = call.of(TranscriptPartial)
        assert len(partials) >= 2  # the fake streams the transcript a few words at a time
        texts = [p.text for p in partials]
        assert all(b.startswith(a.strip()) for a, b in pairwise(texts))  # growing
        assert texts[-1].strip() == call.lines("assistant")[0].text
        final_at = call.events.index(call.lines("assistant")[0])
        assert all(call.events.index(p) < final_at for p in partials)
