"""The pipeline engine against the real llm.openai provider and a fake Chat Completions server, with scripted STT/TTS/VAD."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from patterd.calls.pipeline import (
    PipelineEngine,
    PipelineOptions,
    PipelineSession,
    SentenceChunker,
    heard_texts,
)
from patterd.calls.turn_latency import TurnLatency
from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.errors import ProviderAuthError, ProviderError
from patterd.protocols.audio import FRAME_BYTES
from patterd.protocols.events import BargeIn, CallEvent, CallFailed, TranscriptLine, Usage
from patterd.providers.kinds import AudioOut, EngineEvent, Message, ToolSchema, Transcript, UserTurnEnded
from patterd.providers.openai_llm import Options, build
from patterd.providers.spec import BuildContext
from tests.fakes.openai_chat import FakeChatServer, Reply

LOUD = b"\x10" * FRAME_BYTES  # a loud μ-law frame: "speech" for the fake VAD and STT
QUIET = b"\xff" * FRAME_BYTES
TONE = b"\x2a"
PLAYOUT_SPEED = 5.0  # the fake caller's ear plays 20 ms of audio in 4 ms
TIMEOUT = 5.0

# ------------------------------------------------------------------ the caller's ear


class FakeAudioOut:
    """Plays queued audio frame by frame in (accelerated) real time; interrupt drops what is left."""

    def __init__(self) -> None:
        self._queue: list[tuple[str, bytes]] = []
        self._current: str | None = None
        self.played: dict[str, float] = {}  # segment → ms played
        self.plays: list[tuple[float, str, int]] = []  # (monotonic, segment, bytes) per play() call
        self.interrupts: list[tuple[float, tuple[str, int] | None]] = []
        self._progress = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_play: list[Callable[[], None]] = []  # what a call session does once audio reaches the carrier

    async def __aenter__(self) -> FakeAudioOut:
        self._task = asyncio.get_running_loop().create_task(self._playout())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _playout(self) -> None:
        while True:
            if not self._queue:
                self._current = None
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            segment, data = self._queue[0]
            frame, rest = data[:FRAME_BYTES], data[FRAME_BYTES:]
            if rest:
                self._queue[0] = (segment, rest)
            else:
                self._queue.pop(0)
            self._current = segment
            await asyncio.sleep(len(frame) / 8 / 1000 / PLAYOUT_SPEED)  # pacing the fake's playout
            self.played[segment] = self.played.get(segment, 0.0) + len(frame) / 8
            self._progress.set()
            self._progress.clear()

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        self.plays.append((SYSTEM_CLOCK.monotonic(), segment, len(ulaw)))
        self._queue.append((segment, ulaw))
        self._idle.clear()
        self._wake.set()
        for callback in self.on_play:
            callback()

    async def interrupt(self) -> tuple[str, int] | None:
        heard: tuple[str, int] | None = None
        if self.speaking:
            segment = self._current or self._queue[0][0]
            heard = (segment, int(self.played.get(segment, 0.0)))
        self._queue.clear()
        self.interrupts.append((SYSTEM_CLOCK.monotonic(), heard))
        return heard

    async def drained(self) -> None:
        await self._idle.wait()

    @property
    def speaking(self) -> bool:
        return bool(self._queue) or (not self._idle.is_set() and self._current is not None)

    async def wait_played(self, segment: str, ms: float) -> None:
        async with asyncio.timeout(TIMEOUT):
            while self.played.get(segment, 0.0) < ms:
                await self._progress.wait()


# ------------------------------------------------------------------ the call


@dataclass
class FakeCall:
    """A CallContext: records events and tool calls, answers tools from a table."""

    audio: AudioOut
    instructions: str = "You are a helpful receptionist."
    first_message: str | None = None
    tools: Sequence[ToolSchema] = ()
    tool_results: dict[str, str] = field(default_factory=dict)
    call_id: str = "call-1"
    agent_name: str = "support"
    clock: Clock = SYSTEM_CLOCK
    events: list[CallEvent] = field(default_factory=list)
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    speech_ends: list[float] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        # The turn timer the call session keeps: latency_ms and transport_ms come from it, as in a real call.
        self.turns = TurnLatency(self.clock)
        if isinstance(self.audio, FakeAudioOut):
            self.audio.on_play.append(self.turns.sent)

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        self.tool_calls.append((name, dict(arguments)))
        return self.tool_results.get(name, '{"ok": true}')

    def emit(self, event: EngineEvent) -> None:
        if isinstance(event, UserTurnEnded):
            self.speech_ends.append(self.clock.monotonic() if event.at is None else event.at)
            self.turns.start(event.at)
            return
        if isinstance(event, TranscriptLine):
            event = self.turns.complete(event)
        self.events.append(event)
        self._changed.set()

    def new_event_fields(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "ts": self.clock.now()}

    def of(self, kind: type[CallEvent]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def lines(self, role: str) -> list[TranscriptLine]:
        return [e for e in self.of(TranscriptLine) if e.role == role]

    async def wait(self, predicate: Callable[[], Any]) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while not (result := predicate()):
                self._changed.clear()
                await self._changed.wait()
        return result

    async def wait_lines(self, role: str, n: int) -> list[TranscriptLine]:
        return await self.wait(lambda: len(self.lines(role)) >= n and self.lines(role))  # type: ignore[no-any-return]


# ------------------------------------------------------------------ scripted STT, TTS, VAD


def loud(frame: bytes) -> bool:
    return frame[0] != 0xFF


class FakeVADStream:
    """Energy VAD: a loud frame starts speech; `hangover` quiet frames end it."""

    def __init__(self, hangover: int = 3) -> None:
        self.hangover = hangover
        self._speaking = False
        self._quiet = 0
        self.voiced = False

    def process(self, ulaw: bytes) -> Literal["speech_start", "speech_end"] | None:
        self.voiced = loud(ulaw)
        if loud(ulaw):
            self._quiet = 0
            if not self._speaking:
                self._speaking = True
                return "speech_start"
            return None
        if self._speaking:
            self._quiet += 1
            if self._quiet >= self.hangover:
                self._speaking = False
                return "speech_end"
        return None

    @property
    def speaking(self) -> bool:
        return self._speaking


class FakeVAD:
    def stream(self) -> FakeVADStream:
        return FakeVADStream()


class FakeSTTStream:
    """Recognizes the next scripted utterance from loud frames: an interim after 8, the final on flush (or own endpoint)."""

    def __init__(self, stt: FakeSTT) -> None:
        self.stt = stt
        self._out: asyncio.Queue[Transcript | BaseException] = asyncio.Queue()
        self._loud = 0
        self._quiet = 0
        self._interim_sent = False

    def push_audio(self, ulaw: bytes) -> None:
        if loud(ulaw):
            self._loud += 1
            self._quiet = 0
            if self._loud >= 8 and not self._interim_sent and self.stt.script:
                self._interim_sent = True
                self._out.put_nowait(Transcript(self.stt.script[0].split()[0], is_final=False))
        elif self._loud:
            self._quiet += 1
            if self.stt.own_endpoint_frames and self._quiet >= self.stt.own_endpoint_frames:
                self._final(end_of_utterance=True)

    def _final(self, *, end_of_utterance: bool = False) -> None:
        text = self.stt.script.pop(0) if self._loud >= 8 and self.stt.script else ""
        self._loud = self._quiet = 0
        self._interim_sent = False
        self._out.put_nowait(Transcript(text, is_final=True, end_of_utterance=end_of_utterance))

    async def flush(self) -> None:
        self.stt.flushes += 1
        self._final()

    def fail(self, exc: BaseException) -> None:
        self._out.put_nowait(exc)

    def inject(self, transcript: Transcript) -> None:
        """Deliver a transcript the audio did not produce (a recognizer hearing what the VAD missed)."""
        self._out.put_nowait(transcript)

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._out.get()
            if isinstance(item, BaseException):
                raise item
            yield item


class FakeSTT:
    def __init__(self, script: Sequence[str] = (), *, own_endpoint_frames: int = 0) -> None:
        self.script = list(script)
        self.own_endpoint_frames = own_endpoint_frames
        self.flushes = 0
        self.streams: list[FakeSTTStream] = []
        self._opened = asyncio.Event()

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[FakeSTTStream]:
        stream = FakeSTTStream(self)
        self.streams.append(stream)
        self._opened.set()
        yield stream

    async def wait_streams(self, n: int) -> list[FakeSTTStream]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.streams) < n:
                self._opened.clear()
                await self._opened.wait()
        return self.streams


class FakeTTS:
    """`ms_per_char` of tone per sentence, in 20 ms chunks with a little synthesis time each."""

    def __init__(self, ms_per_char: int = 20, *, fail: Mapping[str, ProviderError] | None = None) -> None:
        self.ms_per_char = ms_per_char
        self.fail = dict(fail or {})
        self.calls: list[tuple[float, str]] = []
        self.closed_early: list[str] = []
        self.open = 0

    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        self.calls.append((SYSTEM_CLOCK.monotonic(), text))
        if text in self.fail:
            raise self.fail.pop(text)
        total = len(text) * self.ms_per_char * 8
        sent = 0
        self.open += 1
        try:
            while sent < total:
                await asyncio.sleep(0.001)  # synthesis time, faster than playout
                n = min(FRAME_BYTES, total - sent)
                sent += n
                yield TONE * n
        finally:
            self.open -= 1
            if sent < total:
                self.closed_early.append(text)


# ------------------------------------------------------------------ the rig


@dataclass
class Rig:
    server: FakeChatServer
    call: FakeCall
    session: PipelineSession
    stt: FakeSTT
    tts: FakeTTS
    task: asyncio.Task[None]
    audio: FakeAudioOut

    def speak(self, frames: int, then_quiet: int = 6) -> None:
        for _ in range(frames):
            self.session.push_audio(LOUD)
        for _ in range(then_quiet):
            self.session.push_audio(QUIET)

    async def request_messages(self, n: int) -> list[dict[str, Any]]:
        received = await self.server.wait_requests(n)
        return received[n - 1].body["messages"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def rig(
    replies: Sequence[Reply],
    *,
    script: Sequence[str] = (),
    first_message: str | None = None,
    tools: Sequence[ToolSchema] = (),
    tool_results: Mapping[str, str] | None = None,
    tts: FakeTTS | None = None,
    stt: FakeSTT | None = None,
    vad: bool = True,
    options: PipelineOptions | None = None,
) -> AsyncIterator[Rig]:
    opts = options or PipelineOptions(
        endpointing_ms=80, flush_grace_ms=300, retry_backoff_ms=10, stt_name="fake", tts_name="fake"
    )
    stt = stt or FakeSTT(script)
    tts = tts or FakeTTS()
    async with (
        FakeChatServer(replies) as server,
        build(Options(api_key="sk-test", base_url=server.base_url), BuildContext()) as llm,
        FakeAudioOut() as audio,
    ):
        call = FakeCall(
            audio, first_message=first_message, tools=tools, tool_results=dict(tool_results or {})
        )
        engine = PipelineEngine(stt, llm, tts, FakeVAD() if vad else None, options=opts)
        async with engine.session(call) as session:
            task = asyncio.get_running_loop().create_task(session.run())
            try:
                yield Rig(server, call, session, stt, tts, task, audio)
            finally:
                if not task.done():  # a test that saw run() fail has consumed its error already
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task


LOOKUP = ToolSchema(
    "lookup_order",
    "Look up an order by id.",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
CHECK_STOCK = ToolSchema(
    "check_stock", "Is an item in stock?", {"type": "object", "properties": {"sku": {"type": "string"}}}
)

# ------------------------------------------------------------------ units


def test_chunker_splits_at_sentence_ends_and_long_clauses() -> None:
    chunker = SentenceChunker(min_chars=10, max_clause_chars=40)
    out: list[str] = []
    for token in [
        "Sure",
        "thing.",
        "We",
        "open",
        "at",
        "9.30",
        "on",
        "weekdays!",
        "Is",
        "that",
        "ok?",
        "Also,",
        "we",
        "have",
        "parking,",
        "a",
        "cafe,",
        "and",
        "a",
        "long",
        "corridor",
        "of",
        "shops,",
        "all",
        "on",
        "site",
    ]:
        out += chunker.push(token + " ")
    out += chunker.flush()
    assert out == [
        "Sure thing.",
        "We open at 9.30 on weekdays!",
        "Is that ok?",
        "Also, we have parking, a cafe, and a long corridor of shops,",
        "all on site",
    ]
    short = SentenceChunker(min_chars=12)
    assert short.push("Hi there. How are you? ") == ["Hi there. How are you?"]  # too short alone


def test_chunker_waits_for_what_follows_a_period_and_cuts_newlines() -> None:
    chunker = SentenceChunker(min_chars=5)
    assert chunker.push("It costs 3.") == []
    assert chunker.push("5 dollars. Next") == ["It costs 3.5 dollars."]
    assert chunker.push(" line\nmore") == ["Next line"]
    assert chunker.flush() == ["more"]


def test_heard_text_is_whole_sentences_plus_the_played_share() -> None:
    from patterd.calls.pipeline import _Sentence

    a, b = (
        _Sentence("One two three four.", 0, 800 * 8),
        _Sentence("Five six seven eight nine ten.", 0, 1000 * 8),
    )
    assert heard_texts([a, b], None) == ["One two three four.", "Five six seven eight nine ten."]
    assert heard_texts([a, b], 800 + 500) == ["One two three four.", "Five six seven"]
    assert heard_texts([a, b], 100) == ["", ""]


# ------------------------------------------------------------------ conversations


async def test_first_message_is_spoken_and_kept_in_history() -> None:
    greeting = "Thanks for calling Acme. How can I help?"
    async with rig([Reply(text="Hello!")], first_message=greeting) as r:
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == greeting and not line.interrupted
        assert [t for _, t in r.tts.calls] == [greeting]
        assert {seg for _, seg, _ in r.audio.plays} == {"turn-1"}
        assert r.audio.played["turn-1"] == pytest.approx(len(greeting) * 20, abs=1)
        r.session.push_text("hi")
        messages = await r.request_messages(1)
        assert messages == [
            {"role": "system", "content": "You are a helpful receptionist."},
            {"role": "assistant", "content": greeting},
            {"role": "user", "content": "hi"},
        ]
        await r.call.wait_lines("assistant", 2)


async def test_tts_starts_while_the_llm_is_still_writing() -> None:
    text = "We open at nine in the morning. We close at five in the evening. Weekends we are closed all day."
    async with rig([Reply(text=text, chunk_delay_secs=0.03)]) as r:
        r.session.push_text("when are you open?")
        (user,) = await r.call.wait_lines("user", 1)
        assert user.text == "when are you open?"
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == text
        assert [t for _, t in r.tts.calls] == [
            "We open at nine in the morning.",
            "We close at five in the evening.",
            "Weekends we are closed all day.",
        ]
        last_chunk_sent = r.server.requests[0].chunk_times[-1]
        first_tts, first_play = r.tts.calls[0][0], r.audio.plays[0][0]
        assert first_tts < first_play < last_chunk_sent  # speaking began long before the model finished
        assert r.tts.calls[1][0] < last_chunk_sent
        assert r.session.history[-1] == Message("assistant", text)


async def test_voice_turn_has_sane_metrics_and_usage() -> None:
    async with rig([Reply(text="We open at nine.", delay_secs=0.05)], script=["what are your hours"]) as r:
        r.speak(30, then_quiet=10)  # 600 ms of speech, then silence
        (user,) = await r.call.wait_lines("user", 1)
        (line,) = await r.call.wait_lines("assistant", 1)
        assert user.text == "what are your hours"
        assert r.stt.flushes == 1 and len(r.call.speech_ends) == 1
        # last loud frame → 3 quiet frames for the VAD's speech end → 80 ms endpointing → flush
        assert line.endpointing_ms is not None and 80 <= line.endpointing_ms < 1000
        assert line.stt_ms is not None and 0 <= line.stt_ms < 200  # the fake STT answers a flush at once
        assert line.llm_ttft_ms is not None and 50 <= line.llm_ttft_ms < 1000  # the server waits 50 ms
        assert line.tts_ttfb_ms is not None and 0 <= line.tts_ttfb_ms < 200
        assert line.latency_ms is not None and line.transport_ms is not None
        stages = line.endpointing_ms + line.stt_ms + line.llm_ttft_ms + line.tts_ttfb_ms + line.transport_ms
        assert stages == pytest.approx(line.latency_ms, abs=0.05)
        assert line.transport_ms < 200
        usage = {u.component: u for u in r.call.of(Usage)}
        assert usage["llm"].provider == "openai"
        assert usage["llm"].quantities == {"input_tokens": 11.0, "output_tokens": 7.0}
        assert usage["tts"].quantities == {"characters": float(len("We open at nine."))}
        assert usage["stt"].provider == "fake" and usage["stt"].quantities["audio_seconds"] == pytest.approx(
            0.8
        )


async def test_stt_end_of_utterance_ends_the_turn_without_waiting_for_the_vad() -> None:
    stt = FakeSTT(["book a table"], own_endpoint_frames=1)
    opts = PipelineOptions(endpointing_ms=5000, retry_backoff_ms=10)
    async with rig([Reply(text="For how many?")], stt=stt, options=opts) as r:
        r.speak(20, then_quiet=1)
        (user,) = await r.call.wait_lines("user", 1)
        assert user.text == "book a table" and stt.flushes == 0
        await r.call.wait_lines("assistant", 1)


async def test_tool_call_round_trip() -> None:
    replies = [
        Reply(text="Let me check that.", tool_calls=[("lookup_order", {"order_id": "42"})]),
        Reply(text="Your order ships tomorrow."),
    ]
    async with rig(replies, tools=[LOOKUP], tool_results={"lookup_order": '{"status": "shipped"}'}) as r:
        r.session.push_text("where is order 42?")
        (line,) = await r.call.wait_lines("assistant", 1)
        assert r.call.tool_calls == [("lookup_order", {"order_id": "42"})]
        assert line.text == "Let me check that. Your order ships tomorrow."
        first = r.server.requests[0].body
        assert first["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "lookup_order",
                    "description": "Look up an order by id.",
                    "parameters": dict(LOOKUP.parameters),
                },
            }
        ]
        messages = r.server.requests[1].body["messages"]
        call_id = messages[2]["tool_calls"][0]["id"]
        assert messages[2] == {
            "role": "assistant",
            "content": "Let me check that.",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id":"42"}'},
                }
            ],
        }
        assert messages[3] == {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": call_id}
        assert [m.role for m in r.session.history] == ["user", "assistant", "tool", "assistant"]


async def test_two_tool_rounds_and_the_round_limit() -> None:
    replies = [
        Reply(tool_calls=[("lookup_order", {"order_id": "7"})]),
        Reply(tool_calls=[("check_stock", {"sku": "A1"}), ("lookup_order", {"order_id": "8"})]),
        Reply(text="Both are on their way."),
        Reply(tool_calls=[("check_stock", {"sku": "B2"})]),
        Reply(tool_calls=[("check_stock", {"sku": "B3"})]),
    ]
    opts = PipelineOptions(max_tool_rounds=1, retry_backoff_ms=10)
    async with rig(replies[:3], tools=[LOOKUP, CHECK_STOCK]) as r:
        r.session.push_text("status of 7 and 8?")
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Both are on their way."
        assert [name for name, _ in r.call.tool_calls] == ["lookup_order", "check_stock", "lookup_order"]
        roles = [m["role"] for m in r.server.requests[2].body["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "tool"]
    async with rig(replies[3:], tools=[CHECK_STOCK], options=opts) as r:
        r.session.push_text("stock?")
        failed = await r.call.wait(lambda: r.call.of(CallFailed))
        assert "max_tool_rounds=1" in failed[0].message and not failed[0].fatal
        assert len(r.call.tool_calls) == 1


async def test_barge_in_stops_audio_cancels_llm_and_tts_and_keeps_only_what_was_heard() -> None:
    first = "This is the first sentence of a rather long answer."
    rest = " It goes on and on with many more words that nobody will ever hear because the caller talks."
    replies = [Reply(text=first + rest, chunk_delay_secs=0.03), Reply(text="Sure, go ahead.")]
    async with rig(replies, script=["wait a second"]) as r:
        r.session.push_text("tell me everything")
        await r.audio.wait_played("turn-1", 400)
        assert not r.server.requests[0].ended.is_set()  # the model is still writing
        r.speak(15, then_quiet=6)  # 300 ms of speech over the agent
        barge = (await r.call.wait(lambda: r.call.of(BargeIn)))[0]
        assert len(r.audio.interrupts) == 1
        interrupted_at, heard = r.audio.interrupts[0]
        assert heard is not None and heard[0] == "turn-1"
        assert 400 <= barge.played_ms <= heard[1] < len(first) * 20
        assert barge.reaction_ms is not None and barge.reaction_ms < 50
        async with asyncio.timeout(TIMEOUT):
            await r.server.requests[0].ended.wait()
        assert r.server.requests[0].aborted and not r.server.requests[0].completed
        assert r.tts.open == 0
        assert all(t < interrupted_at for t, seg, _ in r.audio.plays if seg == "turn-1")
        (cut,) = await r.call.wait_lines("assistant", 1)
        assert cut.interrupted and cut.text and first.startswith(cut.text) and cut.text != first
        assert len(cut.text) == pytest.approx(len(first) * barge.played_ms / (len(first) * 20), abs=8)
        # The caller finishes; the model sees only what was heard.
        messages = await r.request_messages(2)
        assert messages[-2] == {"role": "assistant", "content": cut.text}
        assert messages[-1] == {"role": "user", "content": "wait a second"}
        (_, after) = await r.call.wait_lines("assistant", 2)
        assert after.text == "Sure, go ahead." and not after.interrupted


async def test_a_short_cough_does_not_interrupt_the_agent() -> None:
    greeting = "Thanks for calling Acme dental, how can I help you today?"
    async with rig([], first_message=greeting) as r:
        await r.audio.wait_played("turn-1", 200)
        r.speak(5, then_quiet=6)  # 100 ms of noise
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == greeting and not line.interrupted
        assert r.audio.interrupts == [] and r.call.of(BargeIn) == []
        assert r.stt.flushes == 0 and r.call.lines("user") == []


async def test_llm_failure_mid_turn_apologizes_and_the_call_goes_on() -> None:
    opts = PipelineOptions(retry_backoff_ms=10, apology="Sorry, one moment.")
    replies = [Reply(status=500), Reply(status=500), Reply(text="Now it works.")]
    async with rig(replies, options=opts) as r:
        r.session.push_text("hello?")
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "llm" and not failed.fatal and "HTTP 500" in failed.message
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Sorry, one moment."
        assert len(r.server.requests) == 2  # one retry
        r.session.push_text("hello again")
        (_, line2) = await r.call.wait_lines("assistant", 2)
        assert line2.text == "Now it works."
        assert not r.task.done()


async def test_retryable_llm_error_is_retried_once_silently() -> None:
    async with rig([Reply(status=429), Reply(text="Here you go.")]) as r:
        r.session.push_text("hi")
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Here you go." and r.call.of(CallFailed) == []


async def test_llm_stream_dropped_mid_reply_keeps_what_was_spoken() -> None:
    replies = [
        Reply(text="First part is fine. Second part never arrives here.", disconnect_after=6),
        Reply(text="ok"),
    ]
    async with rig(replies) as r:
        r.session.push_text("hi")
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "llm"
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "First part is fine."
        assert len(r.server.requests) == 1  # text was already spoken: no retry, no apology


async def test_tts_failure_drops_the_rest_of_the_reply() -> None:
    tts = FakeTTS(fail={"Second one breaks.": ProviderAuthError("tts key refused")})
    async with rig([Reply(text="First one works. Second one breaks. Third one is skipped.")], tts=tts) as r:
        r.session.push_text("hi")
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "tts" and "refused" in failed.message
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "First one works."
        assert [t for _, t in tts.calls] == ["First one works.", "Second one breaks."]
        assert r.session.history[-1] == Message("assistant", "First one works.")


async def test_stt_dead_for_good_ends_run_with_the_error() -> None:
    async with rig([]) as r:
        stream = await r.stt.wait_streams(1)
        stream[0].fail(ProviderAuthError("stt key refused"))
        with pytest.raises(ProviderAuthError, match="stt key refused"):
            async with asyncio.timeout(TIMEOUT):
                await r.task


async def test_stt_reconnects_once_after_a_retryable_error() -> None:
    from patterd.errors import ProviderConnectionError

    async with rig([Reply(text="Hello there.")], script=["hi"]) as r:
        streams = await r.stt.wait_streams(1)
        streams[0].fail(ProviderConnectionError("socket closed"))
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "stt" and not failed.fatal
        await r.stt.wait_streams(2)
        r.speak(20, then_quiet=6)
        await r.call.wait_lines("assistant", 1)


async def test_dtmf_is_a_user_turn_for_the_model_only() -> None:
    async with rig([Reply(text="You pressed five.")]) as r:
        r.session.push_dtmf("5")
        messages = await r.request_messages(1)
        assert messages[-1] == {"role": "user", "content": "caller pressed 5"}
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "You pressed five." and r.call.lines("user") == []


async def test_text_turn_without_vad_and_interim_barge_in() -> None:
    long = "Let me read you the whole list of our opening hours for every single day of the week."
    async with rig([Reply(text=long), Reply(text="Sure.")], script=["stop please"], vad=False) as r:
        r.session.push_text("hours?")
        await r.audio.wait_played("turn-1", 300)
        r.speak(10, then_quiet=0)  # the fake STT sends an interim after 8 loud frames
        await r.call.wait(lambda: r.call.of(BargeIn))
        (cut,) = await r.call.wait_lines("assistant", 1)
        assert cut.interrupted and long.startswith(cut.text)


class DeafVAD:
    """A VAD that never hears anything (too quiet a caller for its threshold)."""

    def stream(self) -> DeafVAD:
        return self

    def process(self, ulaw: bytes) -> None:
        return None

    @property
    def speaking(self) -> bool:
        return False

    @property
    def voiced(self) -> bool:
        return False


async def test_words_the_vad_missed_still_end_a_turn_on_silence() -> None:
    stt = FakeSTT()
    async with (
        FakeChatServer([Reply(text="Hi!")]) as server,
        build(Options(api_key="sk-test", base_url=server.base_url), BuildContext()) as llm,
        FakeAudioOut() as audio,
    ):
        call = FakeCall(audio)
        engine = PipelineEngine(
            stt, llm, FakeTTS(), DeafVAD(), options=PipelineOptions(endpointing_ms=50, flush_grace_ms=50)
        )
        async with engine.session(call) as session:
            task = asyncio.get_running_loop().create_task(session.run())
            try:
                # A plain final (no end_of_utterance) that the VAD never heard being spoken.
                (stream,) = await stt.wait_streams(1)
                stream.inject(Transcript("hello", is_final=True))
                (user,) = await call.wait_lines("user", 1)
                assert user.text == "hello" and stt.flushes == 1
                await call.wait_lines("assistant", 1)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_say_speaks_verbatim_over_the_agent() -> None:
    """A voicemail message (say) cuts off the reply in progress and is spoken word for word."""
    long_reply = "This answer is long enough that it is still playing when the voicemail must start now."
    message = "Hi, this is Acme calling about your appointment. Please call us back."
    async with rig([Reply(text=long_reply, chunk_delay_secs=0.03)]) as r:
        r.session.push_text("tell me")
        await r.audio.wait_played("turn-1", 200)
        r.session.say(message)
        lines = await r.call.wait_lines("assistant", 2)
        assert lines[0].interrupted
        assert lines[1].text == message and not lines[1].interrupted
        assert [t for _, t in r.tts.calls][-1] == message
        assert len(r.server.requests) == 1  # the message never went through the model


async def test_say_before_the_call_starts_replaces_the_greeting() -> None:
    async with rig([], first_message="Hello there!") as r:
        r.session.say("Voicemail message.")  # before run() has had a chance to start
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Voicemail message."
        assert [t for _, t in r.tts.calls] == ["Voicemail message."]
