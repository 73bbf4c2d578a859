"""`tts.lmnt` against the fake LMNT server over loopback: session reuse, reset on barge-in, errors, probe."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from patterd.errors import ProviderAuthError, ProviderError
from patterd.providers.lmnt import LMNTTTS, SPEC, Options, build, check
from patterd.providers.spec import BuildContext, validation_environ
from patterd.testing import Setup, TTSSuite, wait_until
from tests.fakes.lmnt import FakeLMNTServer, render

KEY = "lmnt-test-key"
LONG = "A long answer about our opening hours and the holidays. " * 12


def options(server: FakeLMNTServer, **kw: Any) -> Options:
    return Options(**{"api_key": KEY, "base_url": server.base_url, "retry_backoff_secs": 0.01, **kw})


@asynccontextmanager
async def provider(server: FakeLMNTServer, **kw: Any) -> AsyncIterator[LMNTTTS]:
    async with build(options(server, **kw), BuildContext()) as tts:
        yield tts


async def speak(tts: LMNTTTS, text: str) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text)])


# ------------------------------------------------------------------ the shared behavioural suite


@asynccontextmanager
async def suite_setup() -> AsyncIterator[Setup[Any, Any]]:
    async with FakeLMNTServer(speed=100) as server:
        yield Setup(
            provider="lmnt",
            key_variable="LMNT_API_KEY",
            build=lambda: build(options(server, timeout_secs=0.5), BuildContext()),
            control=server,
            check=check,
            build_bad_key=lambda: build(Options(api_key="wrong", base_url=server.base_url), BuildContext()),
        )


@pytest.mark.parametrize("case", TTSSuite.cases())
async def test_behaviour(case: str) -> None:
    await TTSSuite(suite_setup).run(case)


# ------------------------------------------------------------------ options


def test_options_read_the_key_from_the_environment_and_check_ranges() -> None:
    with validation_environ({"LMNT_API_KEY": "from-env"}):
        opts = Options.model_validate({})
        assert opts.api_key is not None and opts.api_key.get_secret_value() == "from-env"
        assert (opts.voice, opts.language, opts.model, opts.speed) == ("lily", "en", None, None)
        assert "from-env" not in repr(opts) + str(opts)
        for bad in ({"speed": 3}, {"speed": 0.1}, {"language": "xx"}, {"voice": ""}):
            with pytest.raises(ValidationError):
                Options.model_validate(bad)
    with validation_environ({}):
        with pytest.raises(ValidationError, match="LMNT_API_KEY"):
            Options.model_validate({})
        Options.model_validate({"base_url": "http://127.0.0.1:9"})  # a proxy or fake may take no key
    assert SPEC.key == "tts.lmnt"


# ------------------------------------------------------------------ the wire, as the fake saw it


async def test_sentences_share_one_session_with_the_init_frame_first_and_nonced_flushes() -> None:
    async with (
        FakeLMNTServer(speed=0) as server,
        provider(server, voice="ava", speed=1.25, model="blizzard") as tts,
    ):
        sentences = ["Hello there.", "How can I help you today?", "We open at nine."]
        audio = [await speak(tts, s) for s in sentences]
    for text, sound in zip(sentences, audio, strict=True):
        # the WAV header is gone: exactly the μ-law samples the fake rendered
        assert sound == render(text, "ulaw", 8000, server.ms_per_char)
    assert len(server.sessions) == 1, "every sentence must reuse the open session"
    session = server.sessions[0]
    assert session.init == {
        "X-API-Key": KEY,
        "lmnt-version": "1.1",
        "voice": "ava",
        "format": "ulaw",
        "sample_rate": 8000,
        "language": "en",
        "model": "blizzard",
        "speed": 1.25,
    }
    assert session.messages == [
        m
        for i, s in enumerate(sentences)
        for m in ({"type": "text", "text": s}, {"type": "flush", "nonce": i + 1})
    ]
    assert [g.completed for g in session.generations] == [True] * 3
    assert tts.characters == sum(len(s) for s in sentences) and tts.sessions_opened == 1


async def test_default_init_frame_has_no_model_or_speed() -> None:
    async with FakeLMNTServer(speed=0) as server, provider(server) as tts:
        assert await speak(tts, "Hi.")
    assert set(server.sessions[0].init) == {
        "X-API-Key",
        "lmnt-version",
        "voice",
        "format",
        "sample_rate",
        "language",
    }


async def test_concurrent_syntheses_get_their_own_sessions() -> None:
    async with FakeLMNTServer(speed=50) as server:
        async with provider(server) as tts:
            a, b = await asyncio.gather(
                speak(tts, "First caller's sentence."), speak(tts, "Second caller, other words.")
            )
            assert a == render("First caller's sentence.", "ulaw", 8000, 60.0)
            assert b == render("Second caller, other words.", "ulaw", 8000, 60.0)
            assert len(server.sessions) == 2
            await speak(tts, "Then one more.")
            assert len(server.sessions) == 2, "an idle session is reused"
        await wait_until(lambda: server.open_connections() == 0, 5, "every session closed")


# ------------------------------------------------------------------ barge-in


async def test_barge_in_resets_and_the_next_sentence_hears_none_of_the_old_audio() -> None:
    async with FakeLMNTServer(speed=5) as server, provider(server) as tts:
        stream = tts.synthesize(LONG)
        assert await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        await wait_until(lambda: server.active_streams() == 0, 5, "the fake to see the reset")
        first = server.sessions[0].generations[0]
        assert first.cancelled and not first.completed
        assert first.audio_bytes < len(render(LONG, "ulaw", 8000, 60.0))
        assert await speak(tts, "Yes?") == render("Yes?", "ulaw", 8000, 60.0), "stale audio leaked"
        assert len(server.sessions) == 1, "the reset session is reused"
        sent = server.sessions[0].messages
        assert sent[2] == {"type": "reset", "nonce": 2} and sent[4] == {"type": "flush", "nonce": 3}


async def test_stale_audio_in_flight_after_a_reset_is_dropped_until_reset_complete() -> None:
    """A server slow to honour the reset: audio of the cancelled text arrives after the reset was sent."""
    async with FakeLMNTServer(speed=0) as server, provider(server) as tts:
        stream = tts.synthesize("Old words.")
        assert await anext(stream)  # speed 0: the whole old audio and its flush_complete are in flight
        await stream.aclose()  # type: ignore[attr-defined]
        new = await speak(tts, "New.")
    assert new == render("New.", "ulaw", 8000, 60.0)


# ------------------------------------------------------------------ errors


async def test_wrong_key_is_fatal_names_the_variable_not_the_key_and_is_not_retried() -> None:
    async with (
        FakeLMNTServer() as server,
        build(Options(api_key="sk-very-secret", base_url=server.base_url), BuildContext()) as tts,
    ):
        with pytest.raises(ProviderAuthError) as caught:
            await speak(tts, "Hello.")
    assert "LMNT_API_KEY" in str(caught.value) and "authentication_error" in str(caught.value)
    assert "sk-very-secret" not in str(caught.value)
    assert server.refused == ["authentication_error"]


async def test_an_unknown_voice_is_a_clear_non_retryable_error() -> None:
    async with FakeLMNTServer() as server, provider(server, voice="nobody") as tts:
        with pytest.raises(ProviderError) as caught:
            await speak(tts, "Hello.")
    assert not caught.value.retryable and "nobody" in str(caught.value)
    assert server.refused == ["invalid_request_error"]


async def test_rate_limits_and_server_errors_are_retried_with_backoff() -> None:
    async with FakeLMNTServer(speed=0) as server, provider(server) as tts:
        server.fail_next(429)
        server.fail_next(503)
        assert await speak(tts, "Hello there.") == render("Hello there.", "ulaw", 8000, 60.0)
        assert server.refused == ["rate_limit_error", "internal_server_error"]
        assert tts.characters == len("Hello there.")
    async with FakeLMNTServer(speed=0) as server, provider(server, max_retries=0) as tts:
        server.fail_next(500)
        with pytest.raises(ProviderError) as caught:
            await speak(tts, "Hello there.")
        assert caught.value.retryable and caught.value.provider == "lmnt"


async def test_a_drop_after_audio_is_retryable_and_not_replayed() -> None:
    async with FakeLMNTServer(speed=0) as server, provider(server) as tts:
        server.drop_next()
        got: list[bytes] = []
        with pytest.raises(ProviderError) as caught:
            async for chunk in tts.synthesize(LONG):
                got.append(chunk)
        assert caught.value.retryable and got, "audio before the drop was played"
        assert len(server.generations()) == 1, "a sentence partly heard is not sent again"
        assert await speak(tts, "Again.")  # a fresh session
        assert len(server.sessions) == 2


async def test_an_idle_session_the_server_closed_is_replaced_at_once() -> None:
    async with (
        FakeLMNTServer(speed=0) as server,
        provider(server, max_retries=1, retry_backoff_secs=30) as tts,
    ):
        assert await speak(tts, "One.")
        await server.close_sessions()  # LMNT closing a session while it sat in the pool
        started = asyncio.get_running_loop().time()
        assert await speak(tts, "Two.") == render("Two.", "ulaw", 8000, 60.0)
        assert asyncio.get_running_loop().time() - started < 5, "no retry backoff for a dead idle session"
        assert tts.sessions_opened == 2 and tts.characters == len("One.") + len("Two.")
        await tts._idle[0].ws.close()  # closed on our side too: not borrowed at all
        assert await speak(tts, "Three.")
        assert tts.sessions_opened == 3


async def test_malformed_server_messages_are_counted_logged_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage text frames in the middle of a synthesis never end it."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # init
        await ws.receive()  # text
        flush = json.loads((await ws.receive()).data)
        for junk in ("{not json", "[1,2]", '{"type": "surprise"}', '{"type": "flush_complete"}', '"text"'):
            await ws.send_str(junk)
        await ws.send_bytes(b"\x7f" * 400)
        await ws.send_json({"type": "timestamps", "timestamps": []})
        await ws.send_json({"type": "flush_complete", "nonce": flush["nonce"]})
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/v1/ai/speech/stream", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with build(Options(api_key=KEY, base_url=f"http://127.0.0.1:{port}"), BuildContext()) as tts:
            assert await speak(tts, "Hi.") == b"\x7f" * 400
            assert tts.malformed == 5
    finally:
        await runner.cleanup()
    assert "malformed" in caplog.text


async def test_unreachable_server_is_retryable() -> None:
    async with build(
        Options(api_key=KEY, base_url="http://127.0.0.1:9", retry_backoff_secs=0), BuildContext()
    ) as tts:
        with pytest.raises(ProviderError) as caught:
            await speak(tts, "Hello.")
    assert caught.value.retryable


async def test_check_probes_the_key() -> None:
    async with FakeLMNTServer() as server:
        async with provider(server) as tts:
            await check(tts)
        async with build(Options(api_key="wrong", base_url=server.base_url), BuildContext()) as bad:
            with pytest.raises(ProviderAuthError, match="LMNT_API_KEY"):
                await check(bad)
    assert server.probes == 2
