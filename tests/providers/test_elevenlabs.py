"""`tts.elevenlabs` against the fake ElevenLabs server over loopback: streaming, keep-alive, cancel, errors, probe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from patterd.errors import ProviderAuthError, ProviderError, ProviderProtocolError
from patterd.protocols import elevenlabs as wire
from patterd.providers.elevenlabs import SPEC, ElevenLabsTTS, Options, UlawConverter, build, check
from patterd.providers.spec import BuildContext, validation_environ
from patterd.testing import Setup, TTSSuite, wait_until
from tests.fakes.elevenlabs import FakeElevenLabsServer, render

KEY = "el-test-key"
RACHEL = wire.PREMADE_VOICES["rachel"]


def options(server: FakeElevenLabsServer, **kw: Any) -> Options:
    return Options(api_key=KEY, base_url=server.base_url, retry_backoff_secs=0.01, **kw)


@asynccontextmanager
async def provider(server: FakeElevenLabsServer, **kw: Any) -> AsyncIterator[ElevenLabsTTS]:
    async with build(options(server, **kw), BuildContext()) as tts:
        yield tts


async def speak(tts: ElevenLabsTTS, text: str) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text)]


# ------------------------------------------------------------------ the shared behavioural suite


@asynccontextmanager
async def suite_setup() -> AsyncIterator[Setup[Any, Any]]:
    async with FakeElevenLabsServer(speed=100) as server:
        yield Setup(
            provider="elevenlabs",
            key_variable="ELEVENLABS_API_KEY",
            build=lambda: build(options(server, timeout_secs=0.5), BuildContext()),
            control=server,
            check=check,
            build_bad_key=lambda: build(Options(api_key="wrong", base_url=server.base_url), BuildContext()),
        )


@pytest.mark.parametrize("case", TTSSuite.cases())
async def test_behaviour(case: str) -> None:
    await TTSSuite(suite_setup).run(case)


# ------------------------------------------------------------------ options


def test_options_resolve_voice_names_and_read_the_key_from_the_environment() -> None:
    with validation_environ({"ELEVENLABS_API_KEY": "from-env"}):
        opts = Options.model_validate({"voice_id": "Rachel"})
        assert opts.voice_id == RACHEL
        assert opts.api_key is not None and opts.api_key.get_secret_value() == "from-env"
        assert Options.model_validate({"voice_id": "pNInz6obpgDQGcFmaJgB"}).voice_id == "pNInz6obpgDQGcFmaJgB"
        assert opts.output_format == "ulaw_8000" and opts.model_id == "eleven_flash_v2_5"
        assert "from-env" not in repr(opts) + str(opts)
        for bad in (
            {"voice_id": "nobody"},
            {"output_format": "mp3_44100_128"},
            {"voice_settings": {"speed": 3}},
        ):
            with pytest.raises(ValidationError):
                Options.model_validate(bad)
    with validation_environ({}):
        with pytest.raises(ValidationError, match="ELEVENLABS_API_KEY"):
            Options.model_validate({})
        Options.model_validate({"base_url": "http://127.0.0.1:9"})  # a proxy or fake may take no key
    assert SPEC.key == "tts.elevenlabs"


# ------------------------------------------------------------------ the wire, as the fake saw it


async def test_each_sentence_is_one_post_on_one_kept_alive_connection() -> None:
    async with (
        FakeElevenLabsServer(speed=0) as server,
        provider(server, voice_id="adam", voice_settings={"stability": 0.5, "speed": 1.1}) as tts,
    ):
        sentences = ["Hello there.", "How can I help you today?", "We open at nine."]
        audio = [b"".join(await speak(tts, s)) for s in sentences]
    for text, sound in zip(sentences, audio, strict=True):
        assert len(sound) == max(100, int(len(text) * 60)) * 8  # 8 kHz μ-law: one byte per sample
    assert [s.texts for s in server.streams] == [[s] for s in sentences]
    first = server.streams[0]
    assert first.voice_id == wire.PREMADE_VOICES["adam"]
    assert first.query == {"output_format": "ulaw_8000"}
    assert first.body == {
        "text": "Hello there.",
        "model_id": "eleven_flash_v2_5",
        "voice_settings": {"stability": 0.5, "speed": 1.1},
    }
    assert len({s.client_port for s in server.streams}) == 1, (
        "every sentence must reuse the kept-alive connection"
    )
    assert tts.characters == sum(len(s) for s in sentences)


@pytest.mark.parametrize("fmt", ["pcm_16000", "pcm_24000", "alaw_8000", "pcm_8000"])
async def test_other_output_formats_come_out_as_8k_ulaw(fmt: str) -> None:
    async with (
        FakeElevenLabsServer(speed=0, chunk_ms=33) as server,
        provider(server, output_format=fmt) as tts,
    ):
        sound = b"".join(await speak(tts, "One two three four five."))
    expected = int(len("One two three four five.") * 60) * 8
    assert abs(len(sound) - expected) <= 16, (fmt, len(sound), expected)
    assert server.streams[0].query == {"output_format": fmt}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30),
    st.sampled_from(["pcm_16000", "pcm_8000", "alaw_8000"]),
)
def test_audio_split_anywhere_converts_like_the_whole(cuts: list[int], fmt: str) -> None:
    audio = render("Split me anywhere, even inside a sample.", fmt, 60.0)
    whole = UlawConverter(fmt)
    expected = whole.feed(audio) + whole.feed(b"", last=True)
    pieces, at = [], 0
    for size in cuts:
        pieces.append(audio[at : at + size])
        at += size
    pieces.append(audio[at:])
    split = UlawConverter(fmt)
    got = b"".join(split.feed(p) for p in pieces) + split.feed(b"", last=True)
    assert got == expected


# ------------------------------------------------------------------ barge-in


async def test_closing_mid_stream_aborts_the_request_and_nothing_more_arrives() -> None:
    async with FakeElevenLabsServer(speed=5) as server:
        async with provider(server) as tts:
            stream = tts.synthesize("A long answer about opening hours. " * 20)
            assert await anext(stream)
            await stream.aclose()  # type: ignore[attr-defined]
            with pytest.raises(StopAsyncIteration):
                await anext(stream)
            await wait_until(lambda: server.active_streams() == 0, 5, "the fake to see the abort")
            assert server.streams[0].cancelled and not server.streams[0].completed
            assert server.streams[0].audio_bytes < len("A long answer about opening hours. " * 20) * 60 * 8
            assert b"".join(await speak(tts, "Yes?"))
            # the aborted connection is gone; the next sentence opened a fresh one
            assert server.streams[1].client_port != server.streams[0].client_port
        await wait_until(lambda: server.open_connections() == 0, 5, "every connection closed")


# ------------------------------------------------------------------ errors


async def test_wrong_key_is_fatal_and_names_the_variable_not_the_key() -> None:
    async with (
        FakeElevenLabsServer() as server,
        build(Options(api_key="sk-very-secret", base_url=server.base_url), BuildContext()) as tts,
    ):
        with pytest.raises(ProviderAuthError) as caught:
            await speak(tts, "Hello.")
    assert "ELEVENLABS_API_KEY" in str(caught.value) and "invalid_api_key" in str(caught.value)
    assert "sk-very-secret" not in str(caught.value)
    assert len(server.refused) == 1, "an auth error must not be retried"


async def test_an_unknown_voice_id_is_a_clear_non_retryable_error() -> None:
    async with FakeElevenLabsServer() as server, provider(server, voice_id="A" * 20) as tts:
        with pytest.raises(ProviderError) as caught:
            await speak(tts, "Hello.")
        with pytest.raises(ProviderError, match="voice_not_found"):
            await check(tts)
    assert (
        not caught.value.retryable
        and "voice_not_found" in str(caught.value)
        and "A" * 20 in str(caught.value)
    )
    assert server.refused == [(404, "voice_not_found")] * 2


async def test_rate_limits_and_server_errors_are_retried_with_backoff() -> None:
    async with FakeElevenLabsServer(speed=0) as server, provider(server) as tts:
        server.fail_next(429)
        server.fail_next(503)
        assert b"".join(await speak(tts, "Hello there."))
        assert tts.requests == 3 and tts.characters == len("Hello there.")
    async with FakeElevenLabsServer(speed=0) as server, provider(server, max_retries=0) as tts:
        server.fail_next(500)
        with pytest.raises(ProviderError) as caught:
            await speak(tts, "Hello there.")
        assert caught.value.retryable and caught.value.provider == "elevenlabs"


async def test_a_drop_after_audio_is_retryable_and_not_replayed() -> None:
    async with FakeElevenLabsServer(speed=0) as server, provider(server) as tts:
        server.drop_next()
        got: list[bytes] = []
        with pytest.raises(ProviderError) as caught:
            async for chunk in tts.synthesize("Hello there, this is long enough to stream."):
                got.append(chunk)
        assert caught.value.retryable and got, "audio before the drop was played"
        assert len(server.streams) == 1, "a sentence partly heard is not sent again"


async def test_a_non_audio_answer_is_counted_logged_and_never_played(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeElevenLabsServer(speed=0) as server, provider(server) as tts:
        server.garbage_next()
        with pytest.raises(ProviderProtocolError):
            await speak(tts, "Hello.")
        assert tts.malformed == 1
        assert "instead of audio" in caplog.text
        assert b"".join(await speak(tts, "Hello."))  # the provider goes on


async def test_unreachable_server_is_retryable() -> None:
    async with build(
        Options(api_key=KEY, base_url="http://127.0.0.1:9", retry_backoff_secs=0), BuildContext()
    ) as tts:
        with pytest.raises(ProviderError) as caught:
            await speak(tts, "Hello.")
    assert caught.value.retryable


async def test_check_probes_the_key_and_the_voice() -> None:
    async with FakeElevenLabsServer() as server:
        async with provider(server) as tts:
            await check(tts)
        async with build(Options(api_key="wrong", base_url=server.base_url), BuildContext()) as bad:
            with pytest.raises(ProviderAuthError, match="ELEVENLABS_API_KEY"):
                await check(bad)
    assert server.probes == 2
