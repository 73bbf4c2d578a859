"""The OpenAI Realtime engine against the fake Realtime server: options, a conversation, turn timing."""

from __future__ import annotations

import math

import pydantic
import pytest

from patterd.protocols.audio import FRAME_BYTES, pcm16_to_ulaw, silence_ulaw
from patterd.protocols.events import BargeIn, CallFailed, Usage
from patterd.providers.kinds import ToolSchema
from patterd.providers.openai_realtime import OpenAIRealtimeOptions
from tests.fakes.openai_realtime import CallTool, FakeRealtimeServer, Reply, Say
from tests.providers.openai_realtime_rig import (
    Call,
    SteppedClock,
    espoken,
    options,
    push_speech,
    running,
)


@pytest.fixture(scope="module")
def spoken_ulaw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espoken(tmp_path_factory)


# ------------------------------------------------------------------ options


def test_missing_api_key_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(pydantic.ValidationError, match=r"requires api_key \(set OPENAI_API_KEY\)"):
        OpenAIRealtimeOptions()


def test_options_defaults_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    opts = OpenAIRealtimeOptions()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "sk-env"
    assert opts.url() == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert opts.audio_format == "pcm" and opts.turn_detection is not None
    assert opts.turn_detection["type"] == "server_vad"
    with pytest.raises(pydantic.ValidationError):
        OpenAIRealtimeOptions.model_validate({"audio_format": "g711_ulaw"})


# ------------------------------------------------------------------ conversation


@pytest.mark.parametrize("audio_format", ["pcm", "pcmu"])
async def test_first_message_then_a_spoken_turn(audio_format: str, spoken_ulaw: bytes) -> None:
    replies = [Say("Thanks for calling Acme."), Say("Your order ships tomorrow.")]
    async with FakeRealtimeServer(replies=replies, transcripts=["Where is my order?"], pace=20) as fake:
        call = Call()
        async with running(options(fake, audio_format=audio_format), call) as (session, _):
            await call.until(lambda: len(call.lines("assistant")) == 1)
            assert call.lines("assistant")[0].text == "Thanks for calling Acme."
            assert (
                fake.response_requests[0] is not None
                and "Thanks for calling Acme." in fake.response_requests[0]
            )
            await push_speech(session, spoken_ulaw)
            await call.until(lambda: len(call.lines("assistant")) == 2)
            assert [line.text for line in call.lines("user")] == ["Where is my order?"]
            assert call.lines("assistant")[1].text == "Your order ships tomorrow."
            assert len(call.speech_ends) == 1
            usage = call.of(Usage)
            assert len(usage) == 2 and usage[0].provider == "openai_realtime"
            assert usage[0].quantities == {
                "input_text_tokens": 46,  # 110 minus the 64 cached text tokens
                "input_audio_tokens": 40,
                "cached_input_tokens": 64,
                "cached_tokens": 64,
                "output_text_tokens": 20,
                "output_audio_tokens": 60,
            }
    assert fake.errors == []
    fmt = fake.sessions[0]["audio"]["input"]["format"]
    assert fmt == ({"type": "audio/pcm", "rate": 24000} if audio_format == "pcm" else {"type": "audio/pcmu"})
    assert all("OpenAI-Beta" not in h for h in fake.handshakes)
    # Every caller frame arrived, transcoded to the session's format (6 bytes of PCM24 per μ-law byte).
    pushed = (len(spoken_ulaw) + 6400) // FRAME_BYTES * FRAME_BYTES
    expected = pushed * 6 if audio_format == "pcm" else pushed
    # soxr holds back its filter delay (a few ms) until more audio comes.
    assert expected - 6 * FRAME_BYTES <= fake.audio_bytes_in <= expected
    # The agent's audio reached the ear as 8 kHz μ-law: about the length of the rendered speech.
    assert sum(call.audio.bytes_by_segment.values()) > 8000
    assert call.audio.finished_segments == 2  # each reply's end let the carrier send its partial frame


async def test_barge_in_cancels_and_truncates_at_played_ms(spoken_ulaw: bytes) -> None:
    long = "Our opening hours are nine to five on weekdays and ten to two on saturdays, closed on sundays."
    async with FakeRealtimeServer(replies=[Say(long)], transcripts=["wait"], pace=4) as fake:
        call = Call(first_message="Hello.", realtime_ear=True)
        call.first_message = None
        async with running(options(fake), call) as (session, _):
            session.push_text("What are your hours?")
            await call.until(lambda: call.audio.played_ms() > 600)
            await push_speech(session, spoken_ulaw, realtime=True, silence_ms=100)
            await call.until(lambda: bool(call.of(BargeIn)))
            await fake.wait_for(lambda: bool(fake.truncates) and fake.cancels >= 1)
            await call.until(lambda: bool(call.lines("assistant")))
    barge = call.of(BargeIn)[0]
    truncate = fake.truncates[0]
    assert truncate["audio_end_ms"] == barge.played_ms
    assert 600 < barge.played_ms < 3000
    assert barge.reaction_ms is not None and barge.reaction_ms < 100
    assert call.audio.bytes_after_interrupt == 0  # nothing of the cut item reached the caller afterwards
    assert call.audio.finished_segments == 0  # a cancelled reply's end is not played out
    line = call.lines("assistant")[0]
    assert line.interrupted and line.text and long.startswith(line.text)
    assert fake.errors == [] or all(e["code"] == "response_cancel_not_active" for e in fake.errors)


async def test_tool_call_round_trip() -> None:
    tools = [
        ToolSchema(
            "lookup_order",
            "Find an order",
            {"type": "object", "properties": {"order_id": {"type": "string"}}},
        )
    ]
    replies: list[Reply] = [
        Say("Hi."),
        CallTool("lookup_order", {"order_id": "42"}),
        Say("Order 42 ships tomorrow."),
    ]
    async with FakeRealtimeServer(replies=replies, pace=50) as fake:
        call = Call(first_message="Hi.", tools=tools, tool_results={"lookup_order": '{"status": "shipping"}'})
        async with running(options(fake), call) as (session, _):
            session.push_text("Where is order 42?")
            await call.until(
                lambda: any(line.text.startswith("Order 42") for line in call.lines("assistant"))
            )
    assert call.tool_calls == [("lookup_order", {"order_id": "42"})]
    assert [o["output"] for o in fake.tool_outputs] == ['{"status": "shipping"}']
    assert fake.sessions[0]["tools"][0]["name"] == "lookup_order"
    assert fake.user_texts == ["Where is order 42?"]
    assert fake.errors == []


async def test_dtmf_reaches_the_model_as_text() -> None:
    async with FakeRealtimeServer(replies=[Say("You pressed five.")], pace=50) as fake:
        call = Call(first_message=None)
        async with running(options(fake), call) as (session, _):
            await fake.wait_for(lambda: fake.connections == 1 and bool(fake.sessions))
            session.push_dtmf("5")
            await call.until(lambda: bool(call.lines("assistant")))
    assert fake.user_texts == ["caller pressed 5"]
    assert fake.received_types()[-1] == "response.create"


async def test_bad_and_unknown_frames_are_counted_not_fatal() -> None:
    async with FakeRealtimeServer(replies=[Say("Still here.")], pace=50) as fake:
        call = Call(first_message=None)
        async with running(options(fake), call) as (session, task):
            await fake.wait_for(lambda: bool(fake.sessions))
            await fake.inject("{not json")
            await fake.inject('{"type": "response.output_audio.delta", "delta": 5}')
            await fake.inject('{"type": "brand.new.event"}')
            session.push_text("hello")
            await call.until(lambda: bool(call.lines("assistant")))
            assert not task.done()
            assert session.bad_frames == 2 and session.unknown_events == 1


async def test_server_error_event_is_recorded() -> None:
    async with FakeRealtimeServer(pace=50) as fake:
        call = Call(first_message=None)
        async with running(options(fake), call):
            await fake.wait_for(lambda: bool(fake.sessions))
            await fake.inject(
                '{"type": "error", "event_id": "e1", "error": {"type": "invalid_request_error", "code": "x", "message": "bad"}}'
            )
            await call.until(lambda: bool(call.of(CallFailed)))
    assert "bad" in call.of(CallFailed)[0].message


async def test_turn_is_timed_from_the_last_loud_frame_sent_to_the_first_audio_back() -> None:
    # 440 Hz at a third of full scale: voiced for our estimate and for the fake server's VAD alike.
    tone = pcm16_to_ulaw(
        b"".join(
            int(10000 * math.sin(2 * math.pi * 440 * i / 8000)).to_bytes(2, "little", signed=True)
            for i in range(160)
        )
    )
    async with FakeRealtimeServer(
        replies=[Say("Hello."), Say("We open at nine.")], transcripts=["hours?"]
    ) as fake:
        call = Call()
        clock = SteppedClock()
        call.clock = call.audio.clock = clock
        async with running(options(fake), call) as (session, _):
            await call.until(lambda: len(call.lines("assistant")) == 1)  # greeted: the session is live
            for _ in range(25):  # 500 ms of speech, then 700 ms of silence: all stamped before any reply
                clock.t += 0.02
                session.push_audio(tone)
            last_voiced = clock.t
            for _ in range(35):
                clock.t += 0.02
                session.push_audio(silence_ulaw(20))
            await call.until(lambda: len(call.lines("assistant")) == 2)
    greeting, answer = call.lines("assistant")
    assert greeting.engine_ms is None  # no caller turn before it
    assert call.speech_ends == [last_voiced]  # not the server's speech_stopped, 500 ms of silence later
    # The clock stood still from the last silent frame on, so the engine's share is exactly the silence.
    assert answer.engine_ms == 700.0


async def test_the_agents_words_stream_as_partial_lines_before_the_final_one() -> None:
    from itertools import pairwise

    from patterd.protocols.events import TranscriptPartial

    async with FakeRealtimeServer(replies=[Say("Thanks for calling Acme, how can I help?")], pace=20) as fake:
        call = Call()
        async with running(options(fake), call):
            await call.until(lambda: len(call.lines("assistant")) == 1)
        partials = call.of(TranscriptPartial)
        assert len(partials) >= 2  # the fake streams the transcript a few words at a time
        texts = [p.text for p in partials]
        assert all(b.startswith(a.strip()) for a, b in pairwise(texts))  # growing
        assert texts[-1].strip() == call.lines("assistant")[0].text
        final_at = call.events.index(call.lines("assistant")[0])
        assert all(call.events.index(p) < final_at for p in partials)
