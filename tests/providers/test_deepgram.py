"""`stt.deepgram` against the fake Deepgram server over real sockets: turns, finalize, keepalive, errors, usage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import ValidationError

from patterd.calls.pipeline import PipelineOptions
from patterd.cost import price_usage
from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimitError,
)
from patterd.protocols.events import Usage
from patterd.providers.deepgram import SPEC, DeepgramStream, DeepgramSTT, Options, build
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext
from tests.calls.pipeline_fakes import rig
from tests.fakes.deepgram import FakeDeepgramServer, Fault, silence, tone_ulaw
from tests.fakes.openai_chat import Reply
from tests.providers.vendor_support import Collector, built, eventually, push

KEY = "dg-test-key"


@asynccontextmanager
async def provider(server: FakeDeepgramServer, **options: Any) -> AsyncIterator[DeepgramSTT]:
    opts = Options.model_validate({"api_key": KEY, "base_url": server.base_url} | options)
    async with built(build(opts, BuildContext())) as stt:
        yield stt


# ------------------------------------------------------------------ options


def test_spec_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SPEC.key == "stt.deepgram" and SPEC.check is not None and SPEC.capabilities.interim_results
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="DEEPGRAM_API_KEY"):
        Options()
    assert Options(base_url="ws://10.0.0.9:8080").api_key is None  # self-hosted without a key
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-env-secret")
    opts = Options()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "dg-env-secret"
    assert "dg-env-secret" not in repr(opts) and opts.model == "nova-3"
    query = dict(opts.params().query())
    assert query["encoding"] == "mulaw" and query["sample_rate"] == "8000"
    for bad, why in [
        ({"utterance_end_ms": 500}, "greater than or equal to 1000"),
        ({"interim_results": False}, "interim_results"),
        ({"model": "nova-2", "keyterms": ["Acme"]}, "Nova-3"),
        ({"keywords": ["Acme:2"]}, "keyterms"),
        ({"base_url": "api.deepgram.com"}, "URL"),
        ({"endpointing": 10}, "Extra inputs"),
    ]:
        with pytest.raises(ValidationError, match=why):
            Options.model_validate(bad)
    assert Options(interim_results=False, utterance_end_ms=None).utterance_end_ms is None


# ------------------------------------------------------------------ streaming


async def test_turns_interims_and_the_request() -> None:
    async with (
        FakeDeepgramServer(interim_every_ms=200) as server,
        provider(server, endpointing_ms=300, keyterms=["Acme"], language="en-US") as stt,
    ):
        server.say("Hello there.", "What time do you open?")
        async with stt.stream() as stream:
            assert len(server.sessions) == 1, "the socket opens with the stream, before any audio"
            got = Collector(stream)
            push(stream, tone_ulaw(600) + silence(400) + tone_ulaw(800) + silence(400))
            await eventually(lambda: len(got.finals()) == 2)
        await eventually(lambda: server.open_connections == 0)
    first, second = got.finals()
    assert (first.text, first.end_of_utterance, first.audio_ms) == ("Hello there.", True, 900.0)
    assert (second.text, second.end_of_utterance, second.audio_ms) == ("What time do you open?", True, 2100.0)
    assert first.confidence == pytest.approx(0.98)
    interims = [t.text for t in got.items if not t.is_final]
    assert "Hello" in interims and "What time" in interims
    assert got.items.index(first) > got.items.index(next(t for t in got.items if t.text == "Hello"))
    session = server.sessions[0]
    assert session.headers["Authorization"] == f"Token {KEY}"
    assert session.param("encoding") == "mulaw" and session.param("sample_rate") == "8000"
    assert session.param("endpointing") == "300" and session.param("utterance_end_ms") == "1000"
    assert session.param("keyterm") == "Acme" and session.param("language") == "en-US"
    assert session.param("interim_results") == "true" and session.param("model") == "nova-3"


async def test_a_turn_is_every_final_segment_up_to_speech_final() -> None:
    async with FakeDeepgramServer(segment_ms=400, interim_every_ms=100) as server, provider(server) as stt:
        server.say(["I would like", "to book a table", "for two"])
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(1300) + silence(400))
            await eventually(lambda: len(got.finals()) == 1)
    assert [t.text for t in got.finals()] == ["I would like to book a table for two"]
    assert server.sessions[0].finals() == ["I would like", "to book a table", "for two"]
    # A finalized segment shows as an interim of the turn so far, never as a final of its own.
    assert "I would like to book a table" in [t.text for t in got.items if not t.is_final]


async def test_utterance_end_closes_a_turn_without_speech_final() -> None:
    async with FakeDeepgramServer() as server, provider(server, endpointing_ms=None) as stt:
        server.say("Are you open on Sunday?")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(600) + silence(1200))
            await eventually(lambda: len(got.finals()) == 1)
    session = server.sessions[0]
    assert session.param("endpointing") == "false"
    assert not any(m.get("speech_final") for m in session.results())
    assert [m["type"] for m in session.sent if m["type"] != "Results"][:1] == ["UtteranceEnd"]
    final = got.finals()[0]
    assert final.text == "Are you open on Sunday?" and final.end_of_utterance
    assert final.audio_ms == pytest.approx(1600.0)  # last word at 0.6 s + utterance_end_ms


async def test_a_late_utterance_end_does_not_cut_the_next_turn() -> None:
    # Messages fed straight to the stream's reader: an UtteranceEnd about words before the open turn
    # (the turn speech_final already ended) must not end the segments that came since.
    stream = DeepgramStream(None, Options(api_key=KEY), None)  # type: ignore[arg-type]
    final = {
        "type": "Results",
        "is_final": True,
        "speech_final": False,
        "start": 2.0,
        "duration": 0.5,
        "channel": {"alternatives": [{"transcript": "second one", "confidence": 0.9}]},
    }
    await stream._on_text(json.dumps(final))
    await stream._on_text('{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.2}')
    assert stream._out.qsize() == 1  # only the interim view of the open turn
    await stream._on_text('{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.4}')
    items = [stream._out.get_nowait() for _ in range(stream._out.qsize())]
    assert items[-1] == Transcript("second one", True, True, 0.9, 3400.0)


async def test_flush_sends_finalize_and_returns_with_the_final_queued() -> None:
    async with FakeDeepgramServer() as server, provider(server, endpointing_ms=5000) as stt:
        server.say("Book it for Friday.")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(500) + silence(100))
            await stream.flush()
            await asyncio.sleep(0)  # let the collector take what is queued
            assert [t.text for t in got.finals()] == ["Book it for Friday."]
            assert got.finals()[0].audio_ms == 600.0
            await stream.flush()  # nothing open: no empty final
            await asyncio.sleep(0)
            assert len(got.finals()) == 1
        assert server.sessions[0].controls == ["Finalize", "Finalize", "CloseStream"]
    assert sum(1 for m in server.sessions[0].results() if m["from_finalize"]) == 2


async def test_an_unanswered_finalize_ends_the_turn_with_the_finals_so_far() -> None:
    async with (
        FakeDeepgramServer(segment_ms=300, answer_finalize=False) as server,
        provider(server, endpointing_ms=5000, flush_timeout_secs=0.2) as stt,
    ):
        server.say(["Table for", "two please"])
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(500) + silence(100))
            await eventually(lambda: any(t.text == "Table for" for t in got.items))
            await stream.flush()  # no from_finalize ever comes: after 0.2 s, what was finalized is the turn
            await asyncio.sleep(0)
            assert [(t.text, t.end_of_utterance) for t in got.finals()] == [("Table for", True)]
        assert server.sessions[0].controls == ["Finalize", "CloseStream"]


async def test_keepalive_flows_while_no_audio_does() -> None:
    async with (
        FakeDeepgramServer(idle_timeout_secs=0.3) as server,
        provider(server, keepalive_secs=0.05) as stt,
    ):
        async with stt.stream() as stream:
            got = Collector(stream)
            await eventually(lambda: stream.keepalives >= 10)  # 0.5 s of silence on the wire, > 0.3 s
            assert server.sessions[0].close_code is None and got.error is None
        assert set(server.sessions[0].controls) == {"KeepAlive", "CloseStream"}


async def test_idle_close_1011_is_a_retryable_error() -> None:
    async with FakeDeepgramServer(idle_timeout_secs=0.2) as server, provider(server, keepalive_secs=9) as stt:
        async with stt.stream() as stream:
            got = Collector(stream)
            await got.task
    assert isinstance(got.error, ProviderConnectionError) and got.error.retryable
    assert "1011" in str(got.error) and "net0001" in str(got.error)


async def test_closing_sends_close_stream_after_the_audio_and_nothing_after() -> None:
    async with FakeDeepgramServer() as server, provider(server) as stt:
        async with stt.stream() as stream:
            push(stream, tone_ulaw(300))
        stream.push_audio(tone_ulaw(20))  # after the call: dropped, not sent
        session = server.sessions[0]
        await asyncio.wait_for(session.ended.wait(), 5)
        assert session.audio_bytes == 2400 and stream.audio_bytes == 2400
        assert session.controls == ["CloseStream"] and session.close_code == 1000
        assert stream.request_id and server.open_connections == 0
    assert stream.audio_seconds == pytest.approx(0.3)
    assert price_usage("deepgram", {"audio_seconds": stream.audio_seconds}) == pytest.approx(
        0.3 / 60 * 0.0077
    )


async def test_barge_in_cancel_mid_turn_closes_cleanly() -> None:
    async with FakeDeepgramServer(interim_every_ms=100) as server, provider(server) as stt:
        server.say("wait stop")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(400))
            await eventually(lambda: any(not t.is_final for t in got.items))
            got.task.cancel()  # the pipeline's reader is cancelled (call over, barge-in, hang-up)
        session = server.sessions[0]
        await asyncio.wait_for(session.ended.wait(), 5)
        assert session.audio_bytes == 3200 and session.controls == ["CloseStream"]


# ------------------------------------------------------------------ errors


async def test_wrong_key_is_a_fatal_auth_error_naming_the_variable() -> None:
    async with FakeDeepgramServer() as server, provider(server, api_key="wrong") as stt:
        with pytest.raises(ProviderAuthError) as info:
            async with stt.stream():
                pass
    assert not info.value.retryable and "DEEPGRAM_API_KEY" in str(info.value)
    assert "Invalid credentials" in str(info.value) and "wrong" not in str(info.value)
    assert len(server.refused) == 1, "auth errors are not retried"


async def test_rate_limit_and_server_errors_are_retried_with_backoff() -> None:
    async with FakeDeepgramServer() as server, provider(server, retry_backoff_ms=5, connect_retries=2) as stt:
        server.fail(Fault(status=429, dg_error="Too many requests."), Fault(status=503))
        async with stt.stream():
            pass
        assert [s for s, _ in server.refused] == [429, 503] and len(server.sessions) == 1
        server.fail(*[Fault(status=429, dg_error="Too many requests.")] * 3)
        with pytest.raises(ProviderRateLimitError) as info:
            async with stt.stream():
                pass
        assert info.value.retryable and "Too many requests" in str(info.value)
        server.fail(Fault(status=400, dg_error="Bad Request"))
        with pytest.raises(ProviderError) as bad:
            async with stt.stream():
                pass
        assert not bad.value.retryable and len(server.refused) == 6


async def test_unreachable_server_is_a_retryable_connection_error() -> None:
    async with FakeDeepgramServer() as server:
        url = server.base_url
    opts = Options(api_key=KEY, base_url=url, connect_retries=1, retry_backoff_ms=1)
    async with build(opts, BuildContext()) as stt:
        with pytest.raises(ProviderConnectionError) as info:
            async with stt.stream():
                pass
    assert info.value.retryable


async def test_a_silent_host_times_out_the_handshake() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # takes the connection and the upgrade request, says nothing

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    opts = Options(
        api_key=KEY, base_url=f"ws://127.0.0.1:{port}", connect_timeout_secs=0.2, connect_retries=0
    )
    try:
        async with build(opts, BuildContext()) as stt:
            with pytest.raises(ProviderConnectionError) as info:
                async with stt.stream():
                    pass
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert info.value.retryable and accepted


async def test_a_drop_mid_stream_keeps_the_words_and_raises_retryable() -> None:
    async with FakeDeepgramServer(segment_ms=200, interim_every_ms=1000) as server, provider(server) as stt:
        server.fail(Fault(drop_after_results=1))
        server.say(["first part", "never heard"])
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(600) + silence(400))  # the second result would end the turn
            await got.task
    assert isinstance(got.error, ProviderConnectionError) and got.error.retryable
    assert "dropped" in str(got.error)
    assert [t.text for t in got.finals()] == ["first part"], "what was finalized is kept"


async def test_malformed_messages_are_logged_counted_and_skipped() -> None:
    async with FakeDeepgramServer() as server, provider(server) as stt:
        server.fail(Fault(malformed=True))
        server.say("still works")
        async with stt.stream() as stream:
            got = Collector(stream)
            push(stream, tone_ulaw(400) + silence(400))
            await eventually(lambda: len(got.finals()) == 1)
        assert stream.malformed == 4 and stt.malformed == 4 and got.error is None
    assert got.finals()[0].text == "still works"


async def test_check_probes_the_key() -> None:
    async with FakeDeepgramServer() as server:
        async with provider(server) as stt:
            await SPEC.check(stt)  # type: ignore[misc]
        assert server.probes == 1
        async with provider(server, api_key="nope") as stt:
            with pytest.raises(ProviderAuthError, match="DEEPGRAM_API_KEY"):
                await stt.check()
        async with provider(server) as stt:
            server.fail(Fault(status=503))
            with pytest.raises(ProviderConnectionError):
                await stt.check()


async def test_a_data_error_close_is_not_retried() -> None:
    assert isinstance(DeepgramStream._close_error(1008, "DATA-0000"), ProviderProtocolError)
    assert DeepgramStream._close_error(1011, "NET-0000").retryable


# ------------------------------------------------------------------ in the pipeline


async def pipeline_turn(
    dg_endpointing_ms: int, pipeline_endpointing_ms: int
) -> tuple[Any, FakeDeepgramServer]:
    """One spoken turn through the real pipeline with stt.deepgram; returns (rig's call, server)."""
    opts = PipelineOptions(
        endpointing_ms=pipeline_endpointing_ms, flush_grace_ms=300, stt_name="deepgram", tts_name="fake"
    )
    async with FakeDeepgramServer() as server, provider(server, endpointing_ms=dg_endpointing_ms) as stt:
        server.say("What are your hours?")
        async with rig([Reply(text="We open at nine.")], stt=stt, options=opts) as r:  # type: ignore[arg-type]
            await eventually(lambda: r.session.stt_stream is not None)
            r.speak(30, then_quiet=25)  # 600 ms of speech, 500 ms of silence
            (user,) = await r.call.wait_lines("user", 1)
            (line,) = await r.call.wait_lines("assistant", 1)
            assert user.text == "What are your hours?" and line.text == "We open at nine."
            return r.call, server
    raise AssertionError("unreachable")


async def test_pipeline_turn_ended_by_deepgram_endpointing() -> None:
    call, server = await pipeline_turn(dg_endpointing_ms=200, pipeline_endpointing_ms=5000)
    assert "Finalize" not in server.sessions[0].controls, "speech_final ended the turn, not the VAD"
    (line,) = call.lines("assistant")
    # Timed from the caller's last voiced frame to the audio where Deepgram decided (0.6 s + 200 ms in).
    assert line.endpointing_ms is not None and line.endpointing_ms < 1000
    assert line.stt_ms is not None, "the turn was timed by where Deepgram ended it (audio_ms)"
    usage = {u.component: u for u in call.of(Usage)}
    assert usage["stt"].provider == "deepgram" and usage["stt"].quantities["audio_seconds"] > 0


async def test_pipeline_vad_end_of_turn_sends_finalize() -> None:
    _, server = await pipeline_turn(dg_endpointing_ms=5000, pipeline_endpointing_ms=80)
    session = server.sessions[0]
    assert session.controls[0] == "Finalize"
    assert next(m["from_finalize"] for m in session.results() if m["is_final"]) is True
