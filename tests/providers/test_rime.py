"""tts.rime against the fake Rime server over real sockets: the TTS suite, contexts, barge-in clear, pooling, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.providers.rime import SPEC, Options, RimeTTS, build, check
from patterd.providers.spec import BuildContext
from patterd.testing import CountingProxy, Setup, TTSSuite, wait_until
from tests.fakes.rime import MALFORMED, FakeRimeServer, Fault

KEY = "rime-test-key"
WRONG = "rime-wrong-key"


class Control:
    """TTSControl over FakeRimeServer, reached through a CountingProxy that counts every socket."""

    def __init__(self, fake: FakeRimeServer, proxy: CountingProxy) -> None:
        self.fake = fake
        self.proxy = proxy

    def texts_received(self) -> list[str]:
        return self.fake.texts()

    def streams_completed(self) -> int:
        return self.fake.completed

    def fail_next(self, status: int) -> None:
        self.fake.fail(Fault(status=status))

    def drop_next(self) -> None:
        self.fake.fail(Fault(drop_after_chunks=2))

    def stall_next(self) -> None:
        self.fake.fail(Fault(stall=True))

    def open_connections(self) -> int:
        return self.proxy.open_connections()

    def active_streams(self) -> int:
        return self.fake.speaking()


def options(base_url: str, key: str = KEY, **extra: Any) -> Options:
    values: dict[str, Any] = {
        "api_key": key,
        "base_url": base_url,
        "retry_backoff_ms": 10,
        "first_audio_timeout_secs": 1.0,
        "connect_timeout_secs": 2.0,
    }
    values.update(extra)
    return Options(**values)


@asynccontextmanager
async def suite_setup() -> AsyncIterator[Setup[Any, Control]]:
    async with FakeRimeServer(KEY) as fake, CountingProxy(fake.port) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}"
        yield Setup(
            provider="rime",
            key_variable="RIME_API_KEY",
            build=lambda: build(options(url), BuildContext()),
            build_bad_key=lambda: build(options(url, WRONG), BuildContext()),
            control=Control(fake, proxy),
            check=check,
            secrets=(KEY, WRONG),
        )


@pytest.mark.parametrize("case", TTSSuite.cases())
async def test_behaviour(case: str) -> None:
    await TTSSuite(suite_setup).run(case)


@asynccontextmanager
async def provider(fake: FakeRimeServer, **extra: Any) -> AsyncIterator[RimeTTS]:
    async with build(options(fake.base_url, **extra), BuildContext()) as tts:
        yield tts


async def speak(tts: RimeTTS, text: str) -> bytes:
    return b"".join([chunk async for chunk in tts.synthesize(text)])


# ------------------------------------------------------------------ wire behaviour


async def test_each_sentence_is_a_context_flushed_on_one_kept_open_connection() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake) as tts:
        first = await speak(tts, "Hello there")  # no punctuation: only the flush makes Rime speak
        second = await speak(tts, "How can I help?")
        conn = fake.connections[0]
        assert len(fake.connections) == 1 and tts.connections_opened == 1
        assert conn.query == {
            "speaker": "astra",
            "modelId": "arcana",
            "audioFormat": "mulaw",
            "samplingRate": "8000",
        }
        assert conn.headers["Authorization"] == f"Bearer {KEY}"
        texts = [m for m in conn.received if "text" in m]
        assert [m["text"] for m in texts] == ["Hello there", "How can I help?"]
        assert texts[0]["contextId"] != texts[1]["contextId"]
        assert conn.operations() == ["flush", "flush"]
        assert conn.done_sent == [texts[0]["contextId"], texts[1]["contextId"]]
    # 8 kHz μ-law straight from Rime: 60 ms per character in the fake, one byte per sample.
    assert len(first) == 8 * 60 * len("Hello there")
    assert len(second) == 8 * 60 * len("How can I help?")


async def test_barge_in_sends_clear_and_late_audio_of_the_cleared_context_is_never_played() -> None:
    async with FakeRimeServer(KEY, speed=5) as fake, provider(fake) as tts:
        stream = tts.synthesize("A long answer that the caller will interrupt halfway through, surely.")
        assert await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
        conn = fake.connections[0]
        await wait_until(lambda: conn.cleared == 1, 5, "the clear at the fake")
        assert conn.operations() == ["flush", "clear"] and tts.cancelled == 1
        # The same connection speaks the next sentence; only its own context's audio comes out.
        after = await speak(tts, "Sure.")
        assert len(after) == 8 * 60 * len("Sure.") and len(fake.connections) == 1
        assert fake.completed == 1


async def test_an_idle_connection_the_server_closed_is_replaced_at_once() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake) as tts:
        await speak(tts, "One.")
        # The server drops idle sockets (Rime's idle timeout is not documented): simulate it.
        for speaker in fake._speakers:
            await speaker.ws.close()
        await wait_until(lambda: fake.open_sockets() == 0, 5, "the fake to close the idle socket")
        assert len(await speak(tts, "Two.")) == 8 * 60 * 4
        assert tts.connections_opened == 2


async def test_concurrent_calls_each_take_their_own_connection() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake) as tts:
        outs = await asyncio.gather(*(speak(tts, f"Caller number {i}.") for i in range(3)))
        assert [len(o) for o in outs] == [8 * 60 * len("Caller number 0.")] * 3
        assert len(fake.connections) == 3


# ------------------------------------------------------------------ errors


async def test_a_wrong_key_is_fatal_names_the_variable_and_never_the_key() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake, key=WRONG) as tts:
        with pytest.raises(ProviderAuthError) as caught:
            await speak(tts, "Hi.")
        assert fake.refused == [401]  # not retried
    assert "RIME_API_KEY" in str(caught.value) and WRONG not in str(caught.value)


async def test_429_and_5xx_are_retried_with_backoff() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake) as tts:
        fake.fail(Fault(status=503), Fault(status=429))
        assert await speak(tts, "Third time.")
        assert fake.refused == [503, 429]


async def test_a_drop_after_audio_is_retryable_and_not_replayed() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake) as tts:
        fake.fail(Fault(drop_after_chunks=2))
        got: list[bytes] = []
        with pytest.raises(ProviderConnectionError) as caught:
            async for chunk in tts.synthesize("A sentence long enough for several chunks."):
                got.append(chunk)
        assert caught.value.retryable and len(got) == 2
        assert await speak(tts, "Back.")


async def test_an_error_event_is_a_provider_error_and_the_connection_is_dropped() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake) as tts:
        fake.fail(Fault(error="speaker not found for model"))
        with pytest.raises(ProviderError, match="speaker not found") as caught:
            await speak(tts, "Hi.")
        assert not caught.value.retryable
        assert await speak(tts, "Hi.")
        assert len(fake.connections) == 2


async def test_malformed_events_are_counted_and_the_sentence_still_plays() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake) as tts:
        fake.fail(Fault(malformed=True))
        audio = await speak(tts, "Still fine.")
    assert len(audio) == 8 * 60 * len("Still fine.")
    assert tts.malformed == len(MALFORMED)


async def test_a_stalled_server_times_out_retryably() -> None:
    async with FakeRimeServer(KEY) as fake, provider(fake, first_audio_timeout_secs=0.3) as tts:
        fake.fail(Fault(stall=True))
        with pytest.raises(ProviderConnectionError):
            await speak(tts, "Anyone there?")
        await wait_until(lambda: fake.open_sockets() == 0, 5, "the stalled socket to be closed")


# ------------------------------------------------------------------ options, probe


def test_options_take_rimes_names_and_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIME_API_KEY", "from-env")
    opts = Options(speaker="cove", modelId="mistv2")
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "from-env"
    assert "from-env" not in repr(opts)
    assert opts.params().query()[:2] == [("speaker", "cove"), ("modelId", "mistv2")]
    assert SPEC.name == "rime" and SPEC.kind == "tts"
    monkeypatch.delenv("RIME_API_KEY")
    with pytest.raises(ValueError, match="RIME_API_KEY"):
        Options()
    with pytest.raises(ValueError):
        Options.model_validate({"api_key": "k", "model_id": "arcana"})  # Rime's own spelling only: modelId


async def test_check_opens_and_closes_an_authenticated_connection() -> None:
    async with FakeRimeServer(KEY) as fake:
        async with provider(fake) as tts:
            await check(tts)
        assert len(fake.connections) == 1 and fake.texts() == []
        await wait_until(lambda: fake.open_sockets() == 0, 5, "the probe socket to close")
        async with provider(fake, key=WRONG) as tts:
            with pytest.raises(ProviderAuthError, match="RIME_API_KEY"):
                await check(tts)
