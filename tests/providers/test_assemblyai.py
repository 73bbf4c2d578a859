"""stt.assemblyai against the fake AssemblyAI server over real sockets: the STT suite, chunking, turns, errors, closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from patterd.errors import ProviderAuthError, ProviderError, ProviderProtocolError, ProviderRateLimitError
from patterd.providers.assemblyai import SPEC, AssemblyAISTT, Options, build, check
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext
from patterd.testing import CountingProxy, Setup, STTSuite, wait_until
from tests.fakes.assemblyai import MALFORMED, FakeAssemblyAIServer, Fault
from tests.fakes.deepgram import frames, silence, tone_ulaw
from tests.providers.vendor_support import ProxiedControl

KEY = "aai-test-key"
WRONG = "aai-wrong-key"


class Control(ProxiedControl):
    """STTControl over FakeAssemblyAIServer, reached through a CountingProxy that counts every socket."""

    fake: FakeAssemblyAIServer

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        self.fake.say(text)  # partials come from the audio's own timeline

    def fail_next(self, status: int) -> None:
        self.fake.fail(Fault(status=status))

    def drop_next(self) -> None:
        self.fake.fail(Fault(drop_after_turns=1))

    def stall_next(self) -> None:
        self.fake.fail(Fault(stall=True))


def options(base_url: str, key: str = KEY, **extra: Any) -> Options:
    values: dict[str, Any] = {
        "api_key": key,
        "base_url": base_url,
        "retry_backoff_ms": 10,
        "connect_timeout_secs": 1.0,
    }
    values.update(extra)
    return Options(**values)


@asynccontextmanager
async def suite_setup() -> AsyncIterator[Setup[Any, Control]]:
    async with FakeAssemblyAIServer(KEY) as fake, CountingProxy(fake.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}"
        yield Setup(
            provider="assemblyai",
            key_variable="ASSEMBLYAI_API_KEY",
            build=lambda: build(options(url), BuildContext()),
            build_bad_key=lambda: build(options(url, WRONG), BuildContext()),
            control=Control(fake, proxy),
            check=check,
            secrets=(KEY, WRONG),
            features=frozenset({"interim", "endpointing", "streaming_input"}),
        )


@pytest.mark.parametrize("case", STTSuite.cases())
async def test_behaviour(case: str) -> None:
    await STTSuite(suite_setup).run(case)


# ------------------------------------------------------------------ helpers


@asynccontextmanager
async def provider(fake: FakeAssemblyAIServer, **extra: Any) -> AsyncIterator[AssemblyAISTT]:
    async with build(options(fake.base_url, **extra), BuildContext()) as stt:
        yield stt


async def read_all(stream: Any, into: list[Transcript]) -> None:
    async for t in stream:
        into.append(t)


async def push(stream: Any, audio: bytes) -> None:
    for frame in frames(audio):
        stream.push_audio(frame)
        await asyncio.sleep(0)


# ------------------------------------------------------------------ wire behaviour


async def test_20ms_frames_go_out_as_100ms_chunks_and_the_tail_is_padded_before_force_endpoint() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake) as stt:
        fake.say("what time do you open")
        heard: list[Transcript] = []
        async with stt.stream() as stream:
            reader = asyncio.create_task(read_all(stream, heard))
            await push(stream, tone_ulaw(1230))  # 61.5 frames: the last chunk is 30 ms, padded to 50
            await stream.flush()
            # flush returned: the final is queued ahead of anything the close could add
            await wait_until(lambda: any(t.is_final for t in heard), 5, "the final")
        await reader
        session = fake.sessions[0]
    assert [t.text for t in heard if t.is_final] == ["What time do you open."]
    assert session.chunk_ms[:-1] == [100.0] * 12
    assert session.chunk_ms[-1] == 50.0
    assert session.controls == ["ForceEndpoint", "Terminate"]
    assert session.query["encoding"] == "pcm_mulaw" and session.query["sample_rate"] == "8000"
    assert session.query["speech_model"] == "universal-streaming-english"
    assert session.headers["Authorization"] == KEY
    finals = [t for t in heard if t.is_final]
    assert len(finals) == 1 and finals[0].end_of_utterance
    assert finals[0].audio_ms == 1230.0  # the caller's audio, not the tail's silence padding
    first_final = heard.index(finals[0])
    assert any(not t.is_final for t in heard[:first_final])


async def test_the_vendor_ends_turns_itself_and_the_formatted_copy_is_the_final() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake) as stt:
        fake.say("hello there", "second turn")
        heard: list[Transcript] = []
        async with stt.stream() as stream:
            reader = asyncio.create_task(read_all(stream, heard))
            for _ in range(2):
                await push(stream, tone_ulaw(600) + silence(600))
            await wait_until(lambda: sum(t.is_final for t in heard) == 2, 5, "two finals")
        await reader
    assert [t.text for t in heard if t.is_final] == ["Hello there.", "Second turn."]


async def test_unformatted_turns_end_on_the_plain_end_of_turn() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake, format_turns=False) as stt:
        fake.say("plain words")
        heard: list[Transcript] = []
        async with stt.stream() as stream:
            reader = asyncio.create_task(read_all(stream, heard))
            await push(stream, tone_ulaw(600))
            await stream.flush()
        await reader
        assert fake.sessions[0].query["format_turns"] == "false"
    assert [t.text for t in heard if t.is_final] == ["plain words"]


async def test_closing_the_stream_terminates_the_session_at_once() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake) as stt:
        loop = asyncio.get_running_loop()
        async with stt.stream() as stream:
            await push(stream, silence(500))
            started = loop.time()
        closed_in = loop.time() - started
        session = fake.sessions[0]
        assert session.ended.is_set() and session.close_code == 1000
        assert session.controls == ["Terminate"]
        assert any(m["type"] == "Termination" for m in session.sent)
    assert closed_in < 1.0, f"closing took {closed_in:.2f} s (AssemblyAI bills open time)"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (3009, ProviderRateLimitError, True),
        (3005, ProviderError, True),
        (3008, ProviderError, True),
        (3007, ProviderProtocolError, False),
        (3006, ProviderProtocolError, False),
        (1008, ProviderAuthError, False),
    ],
)
async def test_close_codes_map_to_errors(code: int, kind: type[ProviderError], retryable: bool) -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake) as stt:
        fake.fail(Fault(close_code=code))
        heard: list[Transcript] = []
        with pytest.raises(ProviderError) as caught:
            async with stt.stream() as stream:
                await read_all(stream, heard)
    assert isinstance(caught.value, kind) and caught.value.retryable is retryable
    assert caught.value.provider == "assemblyai" and str(code) in str(caught.value)
    if code == 1008:
        assert "ASSEMBLYAI_API_KEY" in str(caught.value)


async def test_a_wrong_key_is_fatal_names_the_variable_and_never_the_key() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake, key=WRONG) as stt:
        with pytest.raises(ProviderAuthError) as caught:
            async with stt.stream():
                pass
        assert len(fake.sessions) == 1  # not retried
    assert "ASSEMBLYAI_API_KEY" in str(caught.value) and WRONG not in str(caught.value)


async def test_429_and_5xx_handshakes_are_retried_with_backoff() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake) as stt:
        fake.fail(Fault(status=503), Fault(status=429))
        fake.say("third time lucky")
        heard: list[Transcript] = []
        async with stt.stream() as stream:
            reader = asyncio.create_task(read_all(stream, heard))
            await push(stream, tone_ulaw(600))
            await stream.flush()
        await reader
        assert fake.refused == [503, 429]
    assert [t.text for t in heard if t.is_final] == ["Third time lucky."]


async def test_malformed_messages_are_counted_and_the_call_goes_on() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake) as stt:
        fake.fail(Fault(malformed=True))
        fake.say("still here")
        heard: list[Transcript] = []
        async with stt.stream() as stream:
            reader = asyncio.create_task(read_all(stream, heard))
            await push(stream, tone_ulaw(600))
            await stream.flush()
        await reader
    assert stt.malformed == len(MALFORMED)
    assert [t.text for t in heard if t.is_final] == ["Still here."]


async def test_a_server_that_never_says_begin_times_out_retryably_without_retrying() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, provider(fake, connect_timeout_secs=0.3) as stt:
        fake.fail(Fault(stall=True))
        with pytest.raises(ProviderError) as caught:
            async with stt.stream():
                pass
        assert caught.value.retryable and len(fake.sessions) == 1
        await wait_until(lambda: fake.open_connections == 0, 5, "the stalled socket to close")


# ------------------------------------------------------------------ options, probe


def test_options_read_the_key_from_the_environment_and_need_one_for_assemblyai(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "from-env")
    opts = Options()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "from-env"
    assert "from-env" not in repr(opts)
    monkeypatch.delenv("ASSEMBLYAI_API_KEY")
    with pytest.raises(ValueError, match="ASSEMBLYAI_API_KEY"):
        Options()
    with pytest.raises(ValueError):
        Options(api_key="k", chunk_ms=20)
    assert SPEC.name == "assemblyai" and SPEC.kind == "stt"


async def test_check_gets_a_token_with_the_key() -> None:
    async with FakeAssemblyAIServer(KEY) as fake:
        async with provider(fake) as stt:
            await check(stt)
        assert fake.probes == 1
        async with provider(fake, key=WRONG) as stt:
            with pytest.raises(ProviderAuthError, match="ASSEMBLYAI_API_KEY"):
                await check(stt)
