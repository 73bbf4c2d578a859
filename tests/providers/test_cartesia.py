"""`stt.cartesia` and `tts.cartesia` against the fake Cartesia server over real sockets (suites + Cartesia specifics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from patterd.errors import ProviderAuthError, ProviderError
from patterd.providers import cartesia as provider
from patterd.providers.spec import BuildContext
from patterd.testing import CountingProxy, Setup, STTSuite, TTSSuite, wait_until
from patterd.testing.audio import frames, silent_ulaw, voiced_ulaw
from tests.fakes.cartesia import FakeCartesiaServer, Fault

KEY = "sk_car_test"
WRONG = "sk_car_wrong"


class Control:
    """The suites' controller over FakeCartesiaServer, reached through a CountingProxy."""

    def __init__(self, fake: FakeCartesiaServer, proxy: CountingProxy, kind: str) -> None:
        self.fake, self.proxy, self.kind = fake, proxy, kind

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        self.fake.say(text)  # the fake makes interim transcripts from the audio's own timeline

    def fail_next(self, status: int) -> None:
        self.fake.fail(Fault(status=status))

    def drop_next(self) -> None:
        self.fake.fail(Fault(drop_after=1))

    def stall_next(self) -> None:
        self.fake.fail(Fault(stall=True))

    def open_connections(self) -> int:
        return self.proxy.open_connections()

    def active_streams(self) -> int:
        return self.fake.stt_open if self.kind == "stt" else self.fake.generating()

    def audio_received(self) -> int:
        return sum(s.audio_bytes for s in self.fake.stt_sessions)

    def texts_received(self) -> list[str]:
        return self.fake.texts_received()

    def streams_completed(self) -> int:
        return self.fake.streams_completed()


def stt_options(port: int, key: str = KEY, **extra: Any) -> provider.STTOptions:
    return provider.STTOptions(
        api_key=key,
        base_url=f"http://127.0.0.1:{port}",
        retry_backoff_ms=10,
        flush_timeout_secs=1.0,
        **extra,
    )


def tts_options(port: int, key: str = KEY, **extra: Any) -> provider.TTSOptions:
    return provider.TTSOptions(
        api_key=key, base_url=f"http://127.0.0.1:{port}", retry_backoff_ms=10, timeout_secs=1.0, **extra
    )


@contextlib.asynccontextmanager
async def stt_setup() -> AsyncIterator[Setup[Any, Control]]:
    async with FakeCartesiaServer(KEY) as fake, CountingProxy(fake.port) as proxy:
        yield Setup(
            provider="cartesia",
            key_variable="CARTESIA_API_KEY",
            build=lambda: provider.build_stt(stt_options(proxy.port), BuildContext()),
            build_bad_key=lambda: provider.build_stt(stt_options(proxy.port, WRONG), BuildContext()),
            control=Control(fake, proxy, "stt"),
            check=provider.check,
            secrets=(KEY, WRONG),
            features=frozenset({"interim", "endpointing", "streaming_input"}),
        )


@contextlib.asynccontextmanager
async def tts_setup() -> AsyncIterator[Setup[Any, Control]]:
    async with FakeCartesiaServer(KEY) as fake, CountingProxy(fake.port) as proxy:
        yield Setup(
            provider="cartesia",
            key_variable="CARTESIA_API_KEY",
            build=lambda: provider.build_tts(tts_options(proxy.port), BuildContext()),
            build_bad_key=lambda: provider.build_tts(tts_options(proxy.port, WRONG), BuildContext()),
            control=Control(fake, proxy, "tts"),
            check=provider.check,
            secrets=(KEY, WRONG),
        )


@pytest.mark.parametrize("case", STTSuite.cases())
async def test_stt_suite(case: str) -> None:
    await STTSuite(stt_setup, timeout=5.0).run(case)


@pytest.mark.parametrize("case", TTSSuite.cases())
async def test_tts_suite(case: str) -> None:
    await TTSSuite(tts_setup, timeout=5.0).run(case)


# ------------------------------------------------------------------ STT specifics


async def push(stream: Any, audio: bytes) -> None:
    for frame in frames(audio):
        stream.push_audio(frame)
        await asyncio.sleep(0)


async def test_stt_wire_and_delta_finals_joined_unstripped() -> None:
    """The query, the headers, `finalize` per flush and `close` at the end; finals joined verbatim."""
    async with FakeCartesiaServer(KEY) as fake:
        fake.say(["book a table", "for two"])
        options = stt_options(fake.port, endpointing=False)  # the pipeline's VAD ends turns: one turn here
        async with provider.build_stt(options, BuildContext()) as stt:
            async with stt.stream() as stream:
                heard: list[Any] = []
                reader = asyncio.create_task(collect(stream, heard))
                await push(stream, voiced_ulaw(600) + silent_ulaw(700) + voiced_ulaw(400))
                await wait_until(lambda: fake.stt_sessions[0].audio_bytes >= 8 * 1700, 5, "the audio")
                await stream.flush()
                await wait_until(lambda: any(t.is_final for t in heard), 5, "the final")
            await reader
            assert stream.audio_seconds == pytest.approx(1.7)
        session = fake.stt_sessions[0]
        assert session.finals() == ["book a table", " for two"]  # the fake's deltas
        assert session.query == {
            "model": "ink-whisper",
            "encoding": "pcm_mulaw",
            "sample_rate": "8000",
            "language": "en",
        }
        assert session.headers["X-API-Key"] == KEY and session.headers["Cartesia-Version"] == "2026-03-01"
        assert session.commands == ["finalize", "close"]
        finals = [t for t in heard if t.is_final]
        assert [t.text for t in finals] == ["book a table for two"] and finals[0].end_of_utterance
        assert any(not t.is_final and t.text == "book a table" for t in heard), heard


async def collect(stream: Any, into: list[Any]) -> None:
    async for transcript in stream:
        into.append(transcript)


async def test_stt_legacy_version_closes_with_done() -> None:
    async with FakeCartesiaServer(KEY) as fake:
        options = stt_options(fake.port, cartesia_version="2025-04-16", max_silence_duration_secs=0.3)
        async with provider.build_stt(options, BuildContext()) as stt, stt.stream() as stream:
            await push(stream, silent_ulaw(100))
        session = fake.stt_sessions[0]
        assert session.commands == ["done"] and session.query["max_silence_duration_secs"] == "0.3"
        assert session.headers["Cartesia-Version"] == "2025-04-16"


async def test_stt_malformed_messages_are_counted_and_skipped() -> None:
    async with FakeCartesiaServer(KEY) as fake:
        fake.fail(Fault(malformed=True))
        fake.say("hello there")
        async with provider.build_stt(stt_options(fake.port), BuildContext()) as stt:
            async with stt.stream() as stream:
                heard: list[Any] = []
                reader = asyncio.create_task(collect(stream, heard))
                await push(stream, voiced_ulaw(500) + silent_ulaw(200))
                await stream.flush()
                await wait_until(lambda: any(t.is_final for t in heard), 5, "the final")
            await reader
            assert stt.malformed == 4 and [t.text for t in heard if t.is_final] == ["hello there"]


async def test_stt_options_refuse_a_missing_key_for_cartesia_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="CARTESIA_API_KEY"):
        provider.STTOptions()
    with pytest.raises(ValidationError):
        provider.TTSOptions(api_key="k", cartesia_version="latest")
    monkeypatch.setenv("CARTESIA_API_KEY", "from-env")
    assert provider.TTSOptions().api_key is not None


# ------------------------------------------------------------------ TTS specifics


async def test_tts_one_preopened_socket_multiplexes_contexts() -> None:
    async with FakeCartesiaServer(KEY, speed=None) as fake:
        async with provider.build_tts(tts_options(fake.port), BuildContext()) as tts:
            await wait_until(lambda: len(fake.tts_sockets) == 1, 5, "the pre-opened socket")
            a, b = await asyncio.gather(audio_of(tts, "First sentence."), audio_of(tts, "Second one here."))
            assert len(a) == 8 * fake.ms_per_char * len("First sentence.")
            assert len(b) == 8 * fake.ms_per_char * len("Second one here.")
            assert tts.connects == 1 and tts.characters == len("First sentence.Second one here.")
        sock = fake.tts_sockets[0]
        assert len(fake.tts_sockets) == 1 and len(sock.contexts) == 2
        first = next(iter(sock.contexts.values())).requests[0]
        assert first["output_format"] == {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}
        assert first["voice"] == {"mode": "id", "id": provider.DEFAULT_VOICE} and first["continue"] is False
        assert first["model_id"] == "sonic-3" and first["language"] == "en"
        assert sock.headers["X-API-Key"] == KEY and sock.headers["Cartesia-Version"] == "2026-03-01"


async def audio_of(tts: Any, text: str) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text)])


async def test_tts_barge_in_cancels_and_drops_late_chunks() -> None:
    async with FakeCartesiaServer(KEY, speed=None, chunk_ms=20) as fake:
        async with provider.build_tts(tts_options(fake.port), BuildContext()) as tts:
            stream = tts.synthesize("A long answer that the caller will cut off. " * 10)
            await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]  # barge-in: the pipeline closes the generator
            await wait_until(lambda: bool(fake.contexts()) and fake.contexts()[0].cancelled, 5, "the cancel")
            cancelled = fake.contexts()[0]
            assert not cancelled.completed and tts.cancels == 1
            # Chunks the fake had already written for the cancelled id still arrive: none may leak
            # into the next synthesis (its audio is exactly its own length), which gets a new id.
            after = await audio_of(tts, "Next turn.")
            assert len(after) == 8 * fake.ms_per_char * len("Next turn.")
            second = fake.contexts()[1]
            assert second.context_id != cancelled.context_id
        sent = [m for m in fake.tts_sockets[0].messages if m.get("cancel")]
        assert sent == [{"context_id": cancelled.context_id, "cancel": True}]


async def test_tts_streamed_text_uses_continuations() -> None:
    async def pieces() -> AsyncIterator[str]:
        for piece in ("Hello, ", "this is ", "streamed."):
            yield piece
            await asyncio.sleep(0)

    async with FakeCartesiaServer(KEY, speed=None) as fake:
        async with provider.build_tts(tts_options(fake.port), BuildContext()) as tts:
            audio = b"".join([c async for c in tts.speak_stream(pieces())])
        ctx = fake.contexts()[0]
        assert [(r["transcript"], r["continue"]) for r in ctx.requests] == [
            ("Hello, ", True),
            ("this is ", True),
            ("streamed.", True),
            ("", False),
        ]
        assert fake.texts_received() == ["Hello, this is streamed."]
        assert len(audio) == 8 * fake.ms_per_char * len("Hello, this is streamed.")


async def test_tts_reconnects_after_cartesia_closes_an_idle_socket() -> None:
    async with FakeCartesiaServer(KEY, speed=None, idle_timeout_secs=0.2) as fake:
        async with provider.build_tts(tts_options(fake.port), BuildContext()) as tts:
            await audio_of(tts, "Before.")
            await wait_until(lambda: fake.tts_open == 0, 5, "the fake to close the idle socket")
            assert await audio_of(tts, "After the idle close.")
            assert tts.connects == 2 and len(fake.tts_sockets) == 2


async def test_tts_replaces_a_socket_idle_near_cartesias_limit() -> None:
    async with FakeCartesiaServer(KEY, speed=None) as fake:
        options = tts_options(fake.port, idle_reconnect_secs=0.05)
        async with provider.build_tts(options, BuildContext()) as tts:
            await audio_of(tts, "One.")
            await asyncio.sleep(0.1)  # idle past idle_reconnect_secs: the socket is replaced before use
            await audio_of(tts, "Two.")
            assert tts.connects == 2
            await wait_until(lambda: fake.tts_open == 1, 5, "the old socket to be closed")


async def test_tts_refused_key_at_preopen_is_fatal_on_first_use() -> None:
    async with FakeCartesiaServer(KEY) as fake:
        async with provider.build_tts(tts_options(fake.port, WRONG), BuildContext()) as tts:
            with pytest.raises(ProviderAuthError, match="CARTESIA_API_KEY") as info:
                await audio_of(tts, "Hello.")
            assert WRONG not in str(info.value)
            with pytest.raises(ProviderAuthError):
                await audio_of(tts, "Hello again.")


async def test_tts_error_statuses_per_context() -> None:
    async with FakeCartesiaServer(KEY, speed=None) as fake:
        async with provider.build_tts(tts_options(fake.port, max_retries=1), BuildContext()) as tts:
            await wait_until(lambda: len(fake.tts_sockets) == 1, 5, "the pre-opened socket")
            fake.fail(Fault(status=429), Fault(status=429))
            with pytest.raises(ProviderError) as info:
                await audio_of(tts, "Busy.")
            assert info.value.retryable and "429" in str(info.value)
            fake.fail(Fault(status=500))
            assert await audio_of(tts, "Retried once.")  # 500 then success on a retry
            fake.fail(Fault(status=400))
            with pytest.raises(ProviderError) as bad:
                await audio_of(tts, "Refused.")
            assert not bad.value.retryable
            assert await audio_of(tts, "Still works.")


async def test_tts_malformed_messages_are_counted_and_skipped() -> None:
    async with FakeCartesiaServer(KEY, speed=None) as fake:
        async with provider.build_tts(tts_options(fake.port), BuildContext()) as tts:
            await wait_until(lambda: len(fake.tts_sockets) == 1, 5, "the pre-opened socket")
            fake.fail(Fault(malformed=True))
            audio = await audio_of(tts, "Fine anyway.")
            assert len(audio) == 8 * fake.ms_per_char * len("Fine anyway.")
            assert tts.malformed == 4
