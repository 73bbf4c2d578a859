"""Fallback chains: the circuit breaker on an injected clock, and STT/TTS/LLM chains over real sockets to the fakes."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from patterd.config import load_config_text
from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.graph import build_graph
from patterd.plugins.registry import load_registry
from patterd.providers import deepgram, elevenlabs, offline_tts, openai_llm
from patterd.providers.fallback import (
    REPLAY_MS,
    TTS_STALL_SECS,
    Breaker,
    FallbackLLM,
    FallbackSTT,
    FallbackTTS,
    Member,
    active_name,
)
from patterd.providers.kinds import Message, TextDelta, Transcript
from patterd.providers.spec import BuildContext
from tests.fakes.deepgram import FakeDeepgramServer, Fault, frames, silence, tone_ulaw
from tests.fakes.elevenlabs import FakeElevenLabsServer
from tests.fakes.openai_chat import FakeChatServer, Reply

Switch = tuple[str, str, str, str]


class ManualClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)  # the fakes change on their own sockets


# ------------------------------------------------------------------ the breaker


def test_three_failures_in_a_minute_open_the_breaker_for_thirty_seconds() -> None:
    clock = ManualClock()
    breaker = Breaker(clock)
    breaker.failed()
    clock.t += 20
    breaker.failed()
    assert str(breaker.state) == "closed" and breaker.allows()
    clock.t += 20
    breaker.failed()  # third within 60 s
    assert not breaker.allows()
    assert str(breaker.state) == "open"
    clock.t += 29.9
    assert not breaker.allows()
    clock.t += 0.2
    assert str(breaker.state) == "half_open" and breaker.allows()
    breaker.failed()  # the trial failed: another full cool-down
    assert str(breaker.state) == "open"
    clock.t += 30
    assert str(breaker.state) == "half_open"
    breaker.succeeded()
    assert str(breaker.state) == "closed"
    breaker.failed()
    breaker.failed()
    assert str(breaker.state) == "closed", "the failures before it opened do not count again"


def test_failures_spread_wider_than_the_window_never_open_it() -> None:
    clock = ManualClock()
    breaker = Breaker(clock)
    for _ in range(10):
        breaker.failed()
        clock.t += 31  # two failures at most inside any 60 s
    assert str(breaker.state) == "closed"
    breaker.succeeded()  # a success while closed changes nothing
    assert str(breaker.state) == "closed"


class _Broken:
    """An LLM that always fails with `exc` (the breaker's bookkeeping, no sockets)."""

    def __init__(self, exc: ProviderError) -> None:
        self.exc = exc
        self.name = "broken"
        self.calls = 0

    async def complete(self, messages: Any, tools: Any) -> AsyncIterator[Any]:
        self.calls += 1
        raise self.exc
        yield  # pragma: no cover  (an async generator)


class _Speaks:
    name = "speaks"

    async def complete(self, messages: Any, tools: Any) -> AsyncIterator[Any]:
        yield TextDelta("fine")


async def _drain(stream: AsyncIterator[Any]) -> list[Any]:
    return [chunk async for chunk in stream]


async def test_an_open_member_is_skipped_by_new_calls_until_it_is_half_open() -> None:
    clock = ManualClock()
    broken = _Broken(ProviderConnectionError("refused", provider="broken"))
    chain = FallbackLLM(
        [Member("broken", "llm[0]", broken, Breaker(clock)), Member("speaks", "llm[1]", _Speaks())]
    )
    switches: list[Switch] = []
    for _ in range(3):
        call = chain.bound(lambda *a: switches.append(a))
        assert [c.text for c in await _drain(call.complete([], []))] == ["fine"]
    assert broken.calls == 3 and len(switches) == 3
    assert switches[0][:3] == ("llm", "broken", "speaks") and switches[0][3].startswith("retryable: ")
    call = chain.bound(lambda *a: switches.append(a))
    assert active_name(call, "") == "speaks", "the open member is skipped: no switch, no delay"
    await _drain(call.complete([], []))
    assert broken.calls == 3 and len(switches) == 3
    clock.t += 30
    call = chain.bound(lambda *a: switches.append(a))
    assert active_name(call, "") == "broken", "half-open: one new call tries it again"
    await _drain(call.complete([], []))
    assert broken.calls == 4 and str(chain.members[0].breaker.state) == "open"


async def test_the_last_member_failing_raises_its_error() -> None:
    chain = FallbackLLM(
        [
            Member("a", "llm[0]", _Broken(ProviderConnectionError("a down"))),
            Member("b", "llm[1]", _Broken(ProviderAuthError("b refused the key"))),
        ]
    )
    with pytest.raises(ProviderAuthError, match="b refused"):
        await _drain(chain.bound(lambda *a: None).complete([], []))


# ------------------------------------------------------------------ STT over two fake Deepgrams

DG_KEY = "dg-test-key"


@asynccontextmanager
async def deepgram_stt(server: FakeDeepgramServer) -> AsyncIterator[Any]:
    opts = deepgram.Options.model_validate(
        {"api_key": DG_KEY, "base_url": server.base_url, "endpointing_ms": 300}
    )
    async with deepgram.build(opts, BuildContext()) as stt:
        yield stt


async def test_stt_moves_to_the_next_member_mid_utterance_and_re_feeds_the_open_utterance() -> None:
    # 600 ms of speech is 6 interims and a final at 100 ms per interim: the 2nd result of the next turn drops
    primary_fault = Fault(drop_after_results=8)
    async with (
        FakeDeepgramServer(DG_KEY, interim_every_ms=100) as primary,
        FakeDeepgramServer(DG_KEY, interim_every_ms=100) as backup,
        deepgram_stt(primary) as stt_a,
        deepgram_stt(backup) as stt_b,
    ):
        primary.fail(primary_fault)
        primary.say("Hello there.", "What time do you open?")
        backup.say("What time do you open?")
        chain = FallbackSTT([Member("deepgram", "stt[0]", stt_a), Member("deepgram[1]", "stt[1]", stt_b)])
        switches: list[Switch] = []
        bound = chain.bound(lambda *a: switches.append(a))
        got: list[Transcript] = []
        async with bound.stream() as stream:

            async def read() -> None:
                async for transcript in stream:
                    got.append(transcript)

            reader = asyncio.create_task(read())
            for frame in frames(tone_ulaw(600) + silence(400)):
                stream.push_audio(frame)
            await eventually(lambda: any(t.is_final for t in got))
            assert len(primary.sessions[0].results()) == 7
            # the primary dies one result into the second utterance
            for frame in frames(tone_ulaw(800)):
                stream.push_audio(frame)
            await eventually(lambda: bool(switches))
            switched_at = time.monotonic()
            await eventually(lambda: len(backup.sessions) == 1)
            reopen_ms = (time.monotonic() - switched_at) * 1000
            for frame in frames(silence(400)):
                stream.push_audio(frame)
            await eventually(lambda: len([t for t in got if t.is_final]) == 2)
            reader.cancel()
        await eventually(lambda: backup.open_connections == 0 and primary.open_connections == 0)
    finals = [t for t in got if t.is_final]
    assert [t.text for t in finals] == ["Hello there.", "What time do you open?"]
    assert switches == [("stt", "deepgram", "deepgram[1]", switches[0][3])]
    assert switches[0][3].startswith("retryable: ")
    # the backup heard the open utterance again (at most REPLAY_MS of it), not the finished first one
    replayed = backup.sessions[0].audio_bytes
    assert 0 < replayed <= (REPLAY_MS + 800) * 8
    # audio_ms stays on the stream's own timeline: the second turn ends after 600+400+800 ms of audio
    assert finals[1].audio_ms is not None and 1800 <= finals[1].audio_ms <= 2300, finals[1].audio_ms
    print(f"stt switch: next stream open {reopen_ms:.0f} ms after the failure")
    assert reopen_ms < 1000, reopen_ms
    assert active_name(bound, "") == "deepgram[1]"


async def test_stt_that_refuses_at_open_moves_on_before_the_call_hears_anything() -> None:
    async with (
        FakeDeepgramServer("another-key") as refusing,
        FakeDeepgramServer(DG_KEY) as backup,
        deepgram_stt(refusing) as stt_a,
        deepgram_stt(backup) as stt_b,
    ):
        chain = FallbackSTT([Member("deepgram", "stt[0]", stt_a), Member("backup", "stt[1]", stt_b)])
        switches: list[Switch] = []
        async with chain.bound(lambda *a: switches.append(a)).stream():
            assert len(backup.sessions) == 1
        assert refusing.refused and refusing.refused[0][0] == 401
    assert switches[0][:3] == ("stt", "deepgram", "backup") and switches[0][3].startswith("auth: ")


# ------------------------------------------------------------------ TTS: ElevenLabs dies, offline speaks

EL_KEY = "el-test-key"


@asynccontextmanager
async def tts_chain(el: FakeElevenLabsServer) -> AsyncIterator[FallbackTTS]:
    async with AsyncExitStack() as stack:
        opts = elevenlabs.Options.model_validate({"api_key": EL_KEY, "base_url": el.base_url})
        primary = await stack.enter_async_context(elevenlabs.build(opts, BuildContext()))
        offline = await stack.enter_async_context(
            offline_tts.build(offline_tts.OfflineTTSOptions(), BuildContext())
        )
        yield FallbackTTS([Member("elevenlabs", "tts[0]", primary), Member("offline", "tts[1]", offline)])


async def test_tts_re_synthesizes_the_sentence_on_the_next_member_when_the_stream_drops() -> None:
    sentence = "We open at nine tomorrow morning."
    async with FakeElevenLabsServer(EL_KEY) as el, tts_chain(el) as chain:
        el.drop_next()  # cut after its first chunk
        switches: list[Switch] = []
        bound = chain.bound(lambda *a: switches.append(a))
        times: list[float] = []
        total = 0
        async for chunk in bound.synthesize(sentence):
            times.append(time.monotonic())
            total += len(chunk)
        assert el.streams[0].cancelled and el.streams[0].audio_bytes > 0
        first_bytes = el.streams[0].audio_bytes
        assert switches and switches[0][:3] == ("tts", "elevenlabs", "offline")
        assert total > first_bytes + 8000, "the whole sentence again, from the offline voice"
        gap = max(b - a for a, b in itertools.pairwise(times))
        print(f"tts switch: longest wait between chunks {gap * 1000:.0f} ms")
        assert gap < 1.0, f"{gap:.3f} s of silence at the switch"
        # the call stays on the member that works: the next sentence goes straight to it
        before = len(el.streams)
        assert [c async for c in bound.synthesize("And close at five.")]
        assert len(el.streams) == before and len(switches) == 1


async def test_a_tts_that_goes_quiet_is_failed_over_after_the_stall_limit() -> None:
    async with FakeElevenLabsServer(EL_KEY) as el, tts_chain(el) as chain:
        el.stall_next()  # accepts the request, then says nothing
        switches: list[Switch] = []
        started = time.monotonic()
        first_audio: float | None = None
        async for _ in chain.bound(lambda *a: switches.append(a)).synthesize("Hello there."):
            first_audio = first_audio or time.monotonic()
        assert first_audio is not None
        waited = first_audio - started
        await eventually(lambda: el.streams[0].ended.is_set())
    assert switches[0][:3] == ("tts", "elevenlabs", "offline") and f"{TTS_STALL_SECS} s" in switches[0][3]
    assert TTS_STALL_SECS <= waited < TTS_STALL_SECS + 0.5, waited
    assert el.streams[0].cancelled, "the quiet request was abandoned, not left open"


async def test_a_refused_tts_key_falls_back_loudly(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeElevenLabsServer(EL_KEY) as el, tts_chain(el) as chain:
        el.fail_next(401)
        switches: list[Switch] = []
        audio = [c async for c in chain.bound(lambda *a: switches.append(a)).synthesize("Hello there.")]
    assert audio and switches[0][:3] == ("tts", "elevenlabs", "offline")
    assert switches[0][3].startswith("auth: ") and EL_KEY not in switches[0][3]
    logged = capsys.readouterr().out
    assert "provider refused its credentials; falling back" in logged and "tts[0]" in logged
    assert EL_KEY not in logged


# ------------------------------------------------------------------ LLM over two fake OpenAI servers


@asynccontextmanager
async def llm(server: FakeChatServer) -> AsyncIterator[Any]:
    opts = openai_llm.Options.model_validate({"api_key": "sk-test", "base_url": server.base_url})
    async with openai_llm.build(opts, BuildContext()) as provider:
        yield provider


async def test_llm_retries_the_turn_on_the_next_member_before_any_text() -> None:
    async with (
        FakeChatServer(api_key="sk-test") as a,
        FakeChatServer(api_key="sk-test") as b,
        llm(a) as llm_a,
        llm(b) as llm_b,
    ):
        a.replies.append(Reply(status=503))
        b.replies.append(Reply(text="We open at nine."))
        chain = FallbackLLM([Member("openai", "llm[0]", llm_a), Member("openai[1]", "llm[1]", llm_b)])
        switches: list[Switch] = []
        bound = chain.bound(lambda *a: switches.append(a))
        chunks = await _drain(bound.complete([Message("user", "when?")], []))
    text = "".join(c.text for c in chunks if isinstance(c, TextDelta))
    assert text == "We open at nine."
    assert switches[0][:3] == ("llm", "openai", "openai[1]") and len(b.requests) == 1


async def test_llm_failing_after_text_ends_the_reply_and_the_next_turn_uses_the_next_member() -> None:
    async with (
        FakeChatServer(api_key="sk-test") as a,
        FakeChatServer(api_key="sk-test") as b,
        llm(a) as llm_a,
        llm(b) as llm_b,
    ):
        a.replies.append(Reply(text="We open at nine and close at five today.", disconnect_after=2))
        b.replies.append(Reply(text="Anything else?"))
        chain = FallbackLLM([Member("openai", "llm[0]", llm_a), Member("backup", "llm[1]", llm_b)])
        switches: list[Switch] = []
        bound = chain.bound(lambda *a: switches.append(a))
        got: list[Any] = []
        with pytest.raises(ProviderError):
            async for chunk in bound.complete([Message("user", "when?")], []):
                got.append(chunk)
        assert any(isinstance(c, TextDelta) for c in got) and not b.requests, "no second answer mid-sentence"
        assert switches[0][:3] == ("llm", "openai", "backup")
        chunks = await _drain(bound.complete([Message("user", "thanks")], []))
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "Anything else?"


# ------------------------------------------------------------------ the graph builds and probes every member

CHAIN_CONFIG = """\
agents:
  - name: desk
    stt: [{type: offline}, {type: offline, endpointing_ms: 400}]
    llm: [{type: script, greeting: Hi}, {type: script, greeting: Hello}]
    tts: [{type: offline}, {type: offline, rate_wpm: 200}]
    vad: {type: offline}
"""


async def test_the_graph_builds_each_member_at_its_own_path() -> None:
    registry = load_registry()
    config = load_config_text(CHAIN_CONFIG, registry)
    graph = await build_graph(config, registry, local_url="http://127.0.0.1:0")
    try:
        parts = graph.agents["desk"]
        assert isinstance(parts.stt, FallbackSTT) and isinstance(parts.tts, FallbackTTS)
        assert isinstance(parts.llm, FallbackLLM)
        assert [m.name for m in parts.stt.members] == ["offline[0]", "offline[1]"]
        paths = [p.path for p in graph.providers]
        for role in ("stt", "llm", "tts"):
            assert f"agents[0].{role}[0]" in paths and f"agents[0].{role}[1]" in paths
        assert "agents[0].vad" in paths
        probed = dict(await graph.check())
        assert "agents[0].tts[1]" in probed and probed["agents[0].tts[1]"] is None, probed
    finally:
        await graph.aclose()
