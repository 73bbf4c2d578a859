"""`stt.soniox` against the fake Soniox server over real sockets: the STT suite, turns, finalize, errors, usage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from patterd.cost import price_usage
from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderRateLimitError
from patterd.providers.soniox import SPEC, Options, SonioxSTT, build, check
from patterd.providers.spec import BuildContext
from patterd.testing import CountingProxy, Setup, STTSuite
from tests.fakes.deepgram import silence, tone_ulaw
from tests.fakes.soniox import FakeSonioxServer, Fault
from tests.providers.vendor_support import Collector, ProxiedControl, built, eventually, push

KEY = "soniox-test-key"


# ------------------------------------------------------------------ the shared STT suite


class SonioxControl(ProxiedControl):
    """STTControl over FakeSonioxServer, reached through a CountingProxy that counts every socket."""

    fake: FakeSonioxServer

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        self.fake.say(text)  # the fake makes non-final tokens from the audio's own timeline

    def fail_next(self, status: int) -> None:
        self.fake.fail(Fault(error_code=status))  # Soniox answers every error in-band, then closes

    def drop_next(self) -> None:
        self.fake.fail(Fault(drop_after=1))

    def stall_next(self) -> None:
        self.fake.fail(Fault(stall=True))


@asynccontextmanager
async def soniox_setup() -> AsyncIterator[Setup[Any, SonioxControl]]:
    async with FakeSonioxServer(KEY, endpoint_ms=300) as fake, CountingProxy(fake.port) as proxy:

        def options(key: str = KEY) -> Options:
            return Options(
                api_key=key,
                base_url=f"ws://127.0.0.1:{proxy.port}",
                retry_backoff_ms=10,
                flush_timeout_secs=0.5,
                close_timeout_secs=0.5,  # a stalled fake never sends `finished`
            )

        yield Setup(
            provider="soniox",
            key_variable="SONIOX_API_KEY",
            build=lambda: build(options(), BuildContext()),
            build_bad_key=lambda: build(options("wrong-key"), BuildContext()),
            control=SonioxControl(fake, proxy),
            secrets=(KEY, "wrong-key"),
            check=check,
            features=frozenset({"interim", "endpointing", "streaming_input"}),
        )


@pytest.mark.parametrize("case", STTSuite.cases())
async def test_stt_suite(case: str) -> None:
    await STTSuite(soniox_setup).run(case)


# ------------------------------------------------------------------ helpers


@asynccontextmanager
async def provider(server: FakeSonioxServer, **options: Any) -> AsyncIterator[SonioxSTT]:
    opts = Options.model_validate({"api_key": KEY, "base_url": server.base_url} | options)
    async with built(build(opts, BuildContext())) as stt:
        yield stt


# ------------------------------------------------------------------ options


def test_spec_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SPEC.key == "stt.soniox" and SPEC.check is not None
    monkeypatch.delenv("SONIOX_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="SONIOX_API_KEY"):
        Options()
    monkeypatch.setenv("SONIOX_API_KEY", "sx-env-secret")
    opts = Options()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "sx-env-secret"
    assert "sx-env-secret" not in repr(opts) and "sx-env-secret" not in opts.config().message()
    for bad, why in [
        ({"max_endpoint_delay_ms": 100}, "greater than or equal to 500"),
        ({"keepalive_secs": 25}, "less than or equal to 19"),
        ({"base_url": "stt-rt.soniox.com"}, "URL"),
    ]:
        with pytest.raises(ValidationError, match=why):
            Options.model_validate(bad)


# ------------------------------------------------------------------ streaming


async def test_turns_endpoint_and_the_config_sent() -> None:
    async with (
        FakeSonioxServer(endpoint_ms=300) as server,
        provider(server, language_hints=["en", "es"], max_endpoint_delay_ms=500, context="Acme") as stt,
    ):
        server.say("Hello there.", "What time do you open?")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(600) + silence(400) + tone_ulaw(800) + silence(400))
            await eventually(lambda: len(got.finals()) == 2)
        await eventually(lambda: server.open_connections == 0)
    first, second = got.finals()
    assert (first.text, first.end_of_utterance, first.audio_ms) == ("Hello there.", True, 600.0)
    assert (second.text, second.end_of_utterance) == ("What time do you open?", True)
    assert first.confidence == pytest.approx(0.97)
    assert "Hello" in [t.text for t in got.items if not t.is_final]
    session = server.sessions[0]
    assert session.headers["Authorization"] == f"Bearer {KEY}"
    assert session.config == {
        "model": "stt-rt-v4",
        "audio_format": "mulaw",
        "sample_rate": 8000,
        "num_channels": 1,
        "enable_endpoint_detection": True,
        "language_hints": ["en", "es"],
        "max_endpoint_delay_ms": 500,
        "context": "Acme",
    }
    assert session.controls == ["<empty>"]


async def test_flush_sends_finalize_and_returns_with_the_final_queued() -> None:
    async with FakeSonioxServer() as server, provider(server, enable_endpoint_detection=False) as stt:
        server.say("Book it for Friday.")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(500) + silence(100))
            await stream.flush()
            await asyncio.sleep(0)
            assert [t.text for t in got.finals()] == ["Book it for Friday."]
            await stream.flush()  # nothing open: `<fin>` alone, no empty final
            await asyncio.sleep(0)
            assert len(got.finals()) == 1
        assert server.sessions[0].controls == ["finalize", "finalize", "<empty>"]
        assert server.sessions[0].config is not None
        assert server.sessions[0].config["enable_endpoint_detection"] is False


async def test_keepalive_flows_while_no_audio_does_and_usage_is_priced() -> None:
    async with (
        FakeSonioxServer(idle_timeout_secs=0.3) as server,
        provider(server, keepalive_secs=0.05) as stt,
    ):
        async with stt.stream() as stream:
            got = Collector(stream)
            await eventually(
                lambda: stream.keepalives >= 10
            )  # 0.5 s on the wire, longer than the 0.3 s idle limit
            assert got.error is None
            push(stream, tone_ulaw(300))
        assert set(server.sessions[0].controls) == {"keepalive", "<empty>"}
    assert stream.audio_seconds == pytest.approx(0.3) and stream.finished
    assert price_usage("soniox", {"audio_seconds": stream.audio_seconds}) == pytest.approx(0.3 / 60 * 0.002)


async def test_idle_timeout_408_is_a_retryable_error() -> None:
    async with FakeSonioxServer(idle_timeout_secs=0.2) as server, provider(server, keepalive_secs=9) as stt:
        async with stt.stream() as stream:
            got = Collector(stream)
            await got.task
    assert isinstance(got.error, ProviderConnectionError) and got.error.retryable and "408" in str(got.error)


async def test_barge_in_cancel_sends_nothing_after_close() -> None:
    async with FakeSonioxServer(interim_every_ms=100) as server, provider(server) as stt:
        server.say("wait stop")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(400))
            await eventually(lambda: any(not t.is_final for t in got.items))
            got.task.cancel()
        stream.push_audio(tone_ulaw(20))  # after the call: dropped
        session = server.sessions[0]
        await asyncio.wait_for(session.ended.wait(), 5)
        assert session.audio_bytes == 3200 and session.controls == ["<empty>"]


async def test_errors_map_to_fatal_and_retryable() -> None:
    async with FakeSonioxServer() as server, provider(server, api_key="wrong") as stt:
        async with stt.stream() as stream:
            got = Collector(stream)
            await got.task
        assert isinstance(got.error, ProviderAuthError) and not got.error.retryable
        assert "SONIOX_API_KEY" in str(got.error) and "wrong" not in str(got.error)
    async with FakeSonioxServer() as server, provider(server, retry_backoff_ms=5, connect_retries=2) as stt:
        server.fail(Fault(status=429), Fault(status=503))  # refused upgrades: retried with backoff
        async with stt.stream():
            pass
        assert [code for code, _ in server.errors] == [429, 503] and len(server.sessions) == 1
        server.fail(Fault(error_code=429))
        async with stt.stream() as stream:
            got = Collector(stream)
            await got.task
        assert isinstance(got.error, ProviderRateLimitError) and got.error.retryable
        server.fail(Fault(error_code=400))
        async with stt.stream() as stream:
            got = Collector(stream)
            await got.task
        assert got.error is not None and not got.error.retryable


async def test_malformed_messages_are_counted_and_skipped() -> None:
    async with FakeSonioxServer() as server, provider(server, enable_endpoint_detection=False) as stt:
        server.fail(Fault(malformed=True))
        server.say("still here")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(400))
            await stream.flush()
            await eventually(lambda: len(got.finals()) == 1)
        assert stream.malformed == 4 and stt.malformed == 4 and got.error is None
    assert got.finals()[0].text == "still here"


async def test_check_probe() -> None:
    async with FakeSonioxServer() as server:
        async with provider(server) as stt:
            await stt.check()
        async with provider(server, api_key="wrong") as stt:
            with pytest.raises(ProviderAuthError, match="SONIOX_API_KEY"):
                await stt.check()
    assert server.probes == 1
