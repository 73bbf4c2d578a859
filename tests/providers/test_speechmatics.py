"""`stt.speechmatics` against the fake Speechmatics server over real sockets: the STT suite, turns, flush, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from patterd.cost import price_usage
from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError, ProviderRateLimitError
from patterd.protocols import speechmatics as wire
from patterd.providers.spec import BuildContext
from patterd.providers.speechmatics import SPEC, Options, SpeechmaticsSTT, build, check
from patterd.testing import CountingProxy, Setup, STTSuite
from tests.fakes.deepgram import silence, tone_ulaw
from tests.fakes.speechmatics import FakeSpeechmaticsServer, Fault
from tests.providers.vendor_support import Collector, ProxiedControl, built, eventually, push

KEY = "sm-test-key"


# ------------------------------------------------------------------ the shared STT suite


class SpeechmaticsControl(ProxiedControl):
    """STTControl over FakeSpeechmaticsServer, reached through a CountingProxy that counts every socket."""

    fake: FakeSpeechmaticsServer

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        self.fake.say(text)

    def fail_next(self, status: int) -> None:
        # Keys are refused at the handshake; quota comes in-band (Error quota_exceeded, close 4005);
        # server trouble as a gateway's 5xx at the handshake.
        if status == 429:
            self.fake.fail(Fault(error_type="quota_exceeded"))
        else:
            self.fake.fail(Fault(status=status))

    def drop_next(self) -> None:
        self.fake.fail(Fault(drop_after=1))

    def stall_next(self) -> None:
        self.fake.fail(Fault(stall=True))  # never answers StartRecognition


@asynccontextmanager
async def speechmatics_setup() -> AsyncIterator[Setup[Any, SpeechmaticsControl]]:
    async with FakeSpeechmaticsServer(KEY) as fake, CountingProxy(fake.port) as proxy:

        def options(key: str = KEY) -> Options:
            return Options(
                api_key=key,
                base_url=f"ws://127.0.0.1:{proxy.port}/v2",
                end_of_utterance_silence_trigger=0.3,
                connect_retries=0,  # the stalled case wants the timeout itself, not a retry that succeeds
                start_timeout_secs=1.0,
            )

        yield Setup(
            provider="speechmatics",
            key_variable="SPEECHMATICS_API_KEY",
            build=lambda: build(options(), BuildContext()),
            build_bad_key=lambda: build(options("wrong-key"), BuildContext()),
            control=SpeechmaticsControl(fake, proxy),
            secrets=(KEY, "wrong-key"),
            check=check,
            features=frozenset({"interim", "endpointing", "streaming_input"}),
        )


@pytest.mark.parametrize("case", STTSuite.cases())
async def test_stt_suite(case: str) -> None:
    await STTSuite(speechmatics_setup).run(case)


# ------------------------------------------------------------------ helpers


@asynccontextmanager
async def provider(server: FakeSpeechmaticsServer, **options: Any) -> AsyncIterator[SpeechmaticsSTT]:
    opts = Options.model_validate({"api_key": KEY, "base_url": server.url} | options)
    async with built(build(opts, BuildContext())) as stt:
        yield stt


# ------------------------------------------------------------------ options


def test_spec_options_and_regions(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SPEC.key == "stt.speechmatics" and SPEC.check is not None
    monkeypatch.delenv("SPEECHMATICS_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="SPEECHMATICS_API_KEY"):
        Options()
    monkeypatch.setenv("SPEECHMATICS_API_KEY", "sm-env-secret")
    opts = Options()
    assert opts.api_key is not None and "sm-env-secret" not in repr(opts)
    assert opts.endpoint == "wss://eu.rt.speechmatics.com/v2"
    assert Options(region="us").endpoint == "wss://us.rt.speechmatics.com/v2"
    assert wire.api_url(Options(region="us").endpoint, None, wire.JOBS_PATH) == (
        "https://us1.asr.api.speechmatics.com/v2/jobs"
    )
    for bad, why in [
        ({"max_delay": 0.5}, "greater than or equal to 0.7"),
        ({"end_of_utterance_silence_trigger": 3}, "less than or equal to 2"),
        ({"region": "ap"}, "'eu' or 'us'"),
        ({"base_url": "eu.rt.speechmatics.com"}, "URL"),
    ]:
        with pytest.raises(ValidationError, match=why):
            Options.model_validate(bad)


# ------------------------------------------------------------------ streaming


async def test_turns_end_of_utterance_and_the_start_message() -> None:
    async with (
        FakeSpeechmaticsServer() as server,
        provider(
            server, end_of_utterance_silence_trigger=0.3, max_delay=0.8, additional_vocab=["Acme"]
        ) as stt,
    ):
        server.say("Hello there.", "What time do you open?")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(600) + silence(400) + tone_ulaw(800) + silence(400))
            await eventually(lambda: len(got.finals()) == 2)
        await eventually(lambda: server.open_connections == 0)
    first, second = got.finals()
    assert (first.text, first.end_of_utterance, first.audio_ms) == ("Hello there.", True, 900.0)
    assert (second.text, second.end_of_utterance, second.audio_ms) == ("What time do you open?", True, 2100.0)
    assert first.confidence == pytest.approx(0.96)
    assert "Hello" in [t.text for t in got.items if not t.is_final]
    session = server.sessions[0]
    assert session.headers["Authorization"] == f"Bearer {KEY}"
    assert session.start == {
        "message": "StartRecognition",
        "audio_format": {"type": "raw", "encoding": "mulaw", "sample_rate": 8000},
        "transcription_config": {
            "language": "en",
            "enable_partials": True,
            "max_delay": 0.8,
            "operating_point": "enhanced",
            "conversation_config": {"end_of_utterance_silence_trigger": 0.3},
            "additional_vocab": [{"content": "Acme"}],
        },
    }
    assert session.names() == ["EndOfStream"] and session.controls[0]["last_seq_no"] == session.frames == 110
    assert session.close_code == 1000 and stream.end_of_transcript


async def test_flush_forces_the_end_of_utterance() -> None:
    async with (
        FakeSpeechmaticsServer() as server,
        provider(server, end_of_utterance_silence_trigger=2.0) as stt,
    ):
        server.say("Book it for Friday.")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(500) + silence(100))
            await stream.flush()
            await asyncio.sleep(0)
            assert [(t.text, t.end_of_utterance) for t in got.finals()] == [("Book it for Friday.", True)]
            await stream.flush()  # nothing pending: returns once the audio is acknowledged, no empty final
            await asyncio.sleep(0)
            assert len(got.finals()) == 1
        names = server.sessions[0].names()
        assert names == ["ForceEndOfUtterance", "ForceEndOfUtterance", "EndOfStream"]
        assert server.sessions[0].controls[0]["timestamp"] == pytest.approx(0.6)
    assert stream.audio_seconds == pytest.approx(0.6)
    assert price_usage("speechmatics", {"audio_seconds": stream.audio_seconds}) == pytest.approx(
        0.6 / 60 * 0.0067
    )


async def test_barge_in_cancel_sends_nothing_after_close() -> None:
    async with FakeSpeechmaticsServer(interim_every_ms=100) as server, provider(server) as stt:
        server.say("wait stop")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(400))
            await eventually(lambda: any(not t.is_final for t in got.items))
            got.task.cancel()
        stream.push_audio(tone_ulaw(20))
        session = server.sessions[0]
        await asyncio.wait_for(session.ended.wait(), 5)
        assert session.audio_bytes == 3200 and session.names() == ["EndOfStream"]


async def test_errors_map_to_fatal_and_retryable() -> None:
    async with FakeSpeechmaticsServer() as server, provider(server, api_key="wrong") as stt:
        with pytest.raises(ProviderAuthError) as info:
            async with stt.stream():
                pass
        assert "SPEECHMATICS_API_KEY" in str(info.value) and "wrong" not in str(info.value)
        assert server.refused == [401]
    async with (
        FakeSpeechmaticsServer() as server,
        provider(server, retry_backoff_ms=5, connect_retries=2) as stt,
    ):
        server.fail(Fault(status=503), Fault(error_type="quota_exceeded"))
        async with stt.stream():
            pass
        assert server.refused == [503] and server.errors == ["quota_exceeded"] and len(server.sessions) == 2
        server.fail(*[Fault(error_type="quota_exceeded")] * 3)
        with pytest.raises(ProviderRateLimitError, match="quota_exceeded"):
            async with stt.stream():
                pass
        server.fail(Fault(error_type="not_authorised"))
        with pytest.raises(ProviderAuthError):
            async with stt.stream():
                pass
        server.fail(Fault(error_type="invalid_model"))
        with pytest.raises(ProviderError) as bad:
            async with stt.stream():
                pass
        assert not bad.value.retryable


async def test_idle_timeout_mid_stream_is_retryable() -> None:
    async with FakeSpeechmaticsServer(idle_timeout_secs=0.2) as server, provider(server) as stt:
        async with stt.stream() as stream:
            got = Collector(stream)
            await got.task
    assert isinstance(got.error, ProviderConnectionError) and "idle_timeout" in str(got.error)


async def test_malformed_messages_are_counted_and_skipped() -> None:
    async with FakeSpeechmaticsServer() as server, provider(server) as stt:
        server.fail(Fault(malformed=True))
        server.say("still here")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(400))
            await stream.flush()
            await eventually(lambda: len(got.finals()) == 1)
        assert stt.malformed == 4 and got.error is None
    assert got.finals()[0].text == "still here"


async def test_check_probe() -> None:
    async with FakeSpeechmaticsServer() as server:
        async with provider(server) as stt:
            await stt.check()
        async with provider(server, api_key="wrong") as stt:
            with pytest.raises(ProviderAuthError, match="SPEECHMATICS_API_KEY"):
                await stt.check()
    assert server.probes == 1
