"""The pipeline engine against the real llm.openai provider and a fake Chat Completions server, with scripted STT/TTS/VAD."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from patterd.calls.pipeline import (
    PipelineEngine,
    PipelineOptions,
)
from patterd.errors import ProviderAuthError
from patterd.protocols.events import BargeIn, CallFailed, Usage
from patterd.providers.kinds import Message, Transcript
from patterd.providers.openai_llm import Options, build
from patterd.providers.spec import BuildContext
from tests.calls.pipeline_fakes import (
    CHECK_STOCK,
    LOOKUP,
    TIMEOUT,
    FakeAudioOut,
    FakeCall,
    FakeSTT,
    FakeTTS,
    rig,
)
from tests.fakes.openai_chat import FakeChatServer, Reply

# ------------------------------------------------------------------ conversations


async def test_first_message_is_spoken_and_kept_in_history() -> None:
    greeting = "Thanks for calling Acme. How can I help?"
    async with rig([Reply(text="Hello!")], first_message=greeting) as r:
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == greeting and not line.interrupted
        assert [t for _, t in r.tts.calls] == [greeting]
        assert {seg for _, seg, _ in r.audio.plays} == {"turn-1"}
        assert r.audio.played["turn-1"] == pytest.approx(len(greeting) * 20, abs=1)
        r.session.push_text("hi")
        messages = await r.request_messages(1)
        assert messages == [
            {"role": "system", "content": "You are a helpful receptionist."},
            {"role": "assistant", "content": greeting},
            {"role": "user", "content": "hi"},
        ]
        await r.call.wait_lines("assistant", 2)


async def test_tts_starts_while_the_llm_is_still_writing() -> None:
    text = "We open at nine in the morning. We close at five in the evening. Weekends we are closed all day."
    async with rig([Reply(text=text, chunk_delay_secs=0.03)]) as r:
        r.session.push_text("when are you open?")
        (user,) = await r.call.wait_lines("user", 1)
        assert user.text == "when are you open?"
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == text
        assert [t for _, t in r.tts.calls] == [
            "We open at nine in the morning.",
            "We close at five in the evening.",
            "Weekends we are closed all day.",
        ]
        last_chunk_sent = r.server.requests[0].chunk_times[-1]
        first_tts, first_play = r.tts.calls[0][0], r.audio.plays[0][0]
        assert first_tts < first_play < last_chunk_sent  # speaking began long before the model finished
        assert r.tts.calls[1][0] < last_chunk_sent
        assert r.session.history[-1] == Message("assistant", text)


async def test_voice_turn_has_sane_metrics_and_usage() -> None:
    async with rig([Reply(text="We open at nine.", delay_secs=0.05)], script=["what are your hours"]) as r:
        r.speak(30, then_quiet=10)  # 600 ms of speech, then silence
        (user,) = await r.call.wait_lines("user", 1)
        (line,) = await r.call.wait_lines("assistant", 1)
        assert user.text == "what are your hours"
        assert r.stt.flushes == 1 and len(r.call.speech_ends) == 1
        # last loud frame → 3 quiet frames for the VAD's speech end → 80 ms endpointing → flush
        assert line.endpointing_ms is not None and 80 <= line.endpointing_ms < 1000
        assert line.stt_ms is not None and 0 <= line.stt_ms < 200  # the fake STT answers a flush at once
        assert line.llm_ttft_ms is not None and 50 <= line.llm_ttft_ms < 1000  # the server waits 50 ms
        assert line.tts_ttfb_ms is not None and 0 <= line.tts_ttfb_ms < 200
        assert line.latency_ms is not None and line.transport_ms is not None
        stages = line.endpointing_ms + line.stt_ms + line.llm_ttft_ms + line.tts_ttfb_ms + line.transport_ms
        assert stages == pytest.approx(line.latency_ms, abs=0.05)
        assert line.transport_ms < 200
        usage = {u.component: u for u in r.call.of(Usage)}
        assert usage["llm"].provider == "openai"
        assert usage["llm"].quantities == {"input_tokens": 11.0, "output_tokens": 7.0}
        assert usage["tts"].quantities == {"characters": float(len("We open at nine."))}
        assert usage["stt"].provider == "fake" and usage["stt"].quantities["audio_seconds"] == pytest.approx(
            0.8
        )


async def test_stt_end_of_utterance_ends_the_turn_without_waiting_for_the_vad() -> None:
    stt = FakeSTT(["book a table"], own_endpoint_frames=1)
    opts = PipelineOptions(endpointing_ms=5000, retry_backoff_ms=10)
    async with rig([Reply(text="For how many?")], stt=stt, options=opts) as r:
        r.speak(20, then_quiet=1)
        (user,) = await r.call.wait_lines("user", 1)
        assert user.text == "book a table" and stt.flushes == 0
        await r.call.wait_lines("assistant", 1)


async def test_tool_call_round_trip() -> None:
    replies = [
        Reply(text="Let me check that.", tool_calls=[("lookup_order", {"order_id": "42"})]),
        Reply(text="Your order ships tomorrow."),
    ]
    async with rig(replies, tools=[LOOKUP], tool_results={"lookup_order": '{"status": "shipped"}'}) as r:
        r.session.push_text("where is order 42?")
        (line,) = await r.call.wait_lines("assistant", 1)
        assert r.call.tool_calls == [("lookup_order", {"order_id": "42"})]
        assert line.text == "Let me check that. Your order ships tomorrow."
        first = r.server.requests[0].body
        assert first["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "lookup_order",
                    "description": "Look up an order by id.",
                    "parameters": dict(LOOKUP.parameters),
                },
            }
        ]
        messages = r.server.requests[1].body["messages"]
        call_id = messages[2]["tool_calls"][0]["id"]
        assert messages[2] == {
            "role": "assistant",
            "content": "Let me check that.",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "lookup_order", "arguments": '{"order_id":"42"}'},
                }
            ],
        }
        assert messages[3] == {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": call_id}
        assert [m.role for m in r.session.history] == ["user", "assistant", "tool", "assistant"]


async def test_two_tool_rounds_and_the_round_limit() -> None:
    replies = [
        Reply(tool_calls=[("lookup_order", {"order_id": "7"})]),
        Reply(tool_calls=[("check_stock", {"sku": "A1"}), ("lookup_order", {"order_id": "8"})]),
        Reply(text="Both are on their way."),
        Reply(tool_calls=[("check_stock", {"sku": "B2"})]),
        Reply(tool_calls=[("check_stock", {"sku": "B3"})]),
    ]
    opts = PipelineOptions(max_tool_rounds=1, retry_backoff_ms=10)
    async with rig(replies[:3], tools=[LOOKUP, CHECK_STOCK]) as r:
        r.session.push_text("status of 7 and 8?")
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Both are on their way."
        assert [name for name, _ in r.call.tool_calls] == ["lookup_order", "check_stock", "lookup_order"]
        roles = [m["role"] for m in r.server.requests[2].body["messages"]]
        assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "tool"]
    async with rig(replies[3:], tools=[CHECK_STOCK], options=opts) as r:
        r.session.push_text("stock?")
        failed = await r.call.wait(lambda: r.call.of(CallFailed))
        assert "max_tool_rounds=1" in failed[0].message and not failed[0].fatal
        assert len(r.call.tool_calls) == 1


async def test_barge_in_stops_audio_cancels_llm_and_tts_and_keeps_only_what_was_heard() -> None:
    first = "This is the first sentence of a rather long answer."
    rest = " It goes on and on with many more words that nobody will ever hear because the caller talks."
    replies = [Reply(text=first + rest, chunk_delay_secs=0.03), Reply(text="Sure, go ahead.")]
    async with rig(replies, script=["wait a second"]) as r:
        r.session.push_text("tell me everything")
        await r.audio.wait_played("turn-1", 400)
        assert not r.server.requests[0].ended.is_set()  # the model is still writing
        r.speak(15, then_quiet=6)  # 300 ms of speech over the agent
        barge = (await r.call.wait(lambda: r.call.of(BargeIn)))[0]
        assert len(r.audio.interrupts) == 1
        interrupted_at, heard = r.audio.interrupts[0]
        assert heard is not None and heard[0] == "turn-1"
        assert 400 <= barge.played_ms <= heard[1] < len(first) * 20
        assert barge.reaction_ms is not None and barge.reaction_ms < 50
        async with asyncio.timeout(TIMEOUT):
            await r.server.requests[0].ended.wait()
        assert r.server.requests[0].aborted and not r.server.requests[0].completed
        assert r.tts.open == 0
        assert all(t < interrupted_at for t, seg, _ in r.audio.plays if seg == "turn-1")
        (cut,) = await r.call.wait_lines("assistant", 1)
        assert cut.interrupted and cut.text and first.startswith(cut.text) and cut.text != first
        assert len(cut.text) == pytest.approx(len(first) * barge.played_ms / (len(first) * 20), abs=8)
        # The caller finishes; the model sees only what was heard.
        messages = await r.request_messages(2)
        assert messages[-2] == {"role": "assistant", "content": cut.text}
        assert messages[-1] == {"role": "user", "content": "wait a second"}
        (_, after) = await r.call.wait_lines("assistant", 2)
        assert after.text == "Sure, go ahead." and not after.interrupted


async def test_a_short_cough_does_not_interrupt_the_agent() -> None:
    greeting = "Thanks for calling Acme dental, how can I help you today?"
    async with rig([], first_message=greeting) as r:
        await r.audio.wait_played("turn-1", 200)
        r.speak(5, then_quiet=6)  # 100 ms of noise
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == greeting and not line.interrupted
        assert r.audio.interrupts == [] and r.call.of(BargeIn) == []
        assert r.stt.flushes == 0 and r.call.lines("user") == []


async def test_llm_failure_mid_turn_apologizes_and_the_call_goes_on() -> None:
    opts = PipelineOptions(retry_backoff_ms=10, apology="Sorry, one moment.")
    replies = [Reply(status=500), Reply(status=500), Reply(text="Now it works.")]
    async with rig(replies, options=opts) as r:
        r.session.push_text("hello?")
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "llm" and not failed.fatal and "HTTP 500" in failed.message
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Sorry, one moment."
        assert len(r.server.requests) == 2  # one retry
        r.session.push_text("hello again")
        (_, line2) = await r.call.wait_lines("assistant", 2)
        assert line2.text == "Now it works."
        assert not r.task.done()


async def test_retryable_llm_error_is_retried_once_silently() -> None:
    async with rig([Reply(status=429), Reply(text="Here you go.")]) as r:
        r.session.push_text("hi")
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Here you go." and r.call.of(CallFailed) == []


async def test_llm_stream_dropped_mid_reply_keeps_what_was_spoken() -> None:
    replies = [
        Reply(text="First part is fine. Second part never arrives here.", disconnect_after=6),
        Reply(text="ok"),
    ]
    async with rig(replies) as r:
        r.session.push_text("hi")
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "llm"
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "First part is fine."
        assert len(r.server.requests) == 1  # text was already spoken: no retry, no apology


async def test_tts_failure_drops_the_rest_of_the_reply() -> None:
    tts = FakeTTS(fail={"Second one breaks.": ProviderAuthError("tts key refused")})
    async with rig([Reply(text="First one works. Second one breaks. Third one is skipped.")], tts=tts) as r:
        r.session.push_text("hi")
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "tts" and "refused" in failed.message
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "First one works."
        assert [t for _, t in tts.calls] == ["First one works.", "Second one breaks."]
        assert r.session.history[-1] == Message("assistant", "First one works.")


async def test_stt_dead_for_good_ends_run_with_the_error() -> None:
    async with rig([]) as r:
        stream = await r.stt.wait_streams(1)
        stream[0].fail(ProviderAuthError("stt key refused"))
        with pytest.raises(ProviderAuthError, match="stt key refused"):
            async with asyncio.timeout(TIMEOUT):
                await r.task


async def test_stt_reconnects_once_after_a_retryable_error() -> None:
    from patterd.errors import ProviderConnectionError

    async with rig([Reply(text="Hello there.")], script=["hi"]) as r:
        streams = await r.stt.wait_streams(1)
        streams[0].fail(ProviderConnectionError("socket closed"))
        (failed,) = await r.call.wait(lambda: r.call.of(CallFailed))
        assert failed.component == "stt" and not failed.fatal
        await r.stt.wait_streams(2)
        r.speak(20, then_quiet=6)
        await r.call.wait_lines("assistant", 1)


async def test_dtmf_is_a_user_turn_for_the_model_only() -> None:
    async with rig([Reply(text="You pressed five.")]) as r:
        r.session.push_dtmf("5")
        messages = await r.request_messages(1)
        assert messages[-1] == {"role": "user", "content": "caller pressed 5"}
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "You pressed five." and r.call.lines("user") == []


async def test_text_turn_without_vad_and_interim_barge_in() -> None:
    long = "Let me read you the whole list of our opening hours for every single day of the week."
    async with rig([Reply(text=long), Reply(text="Sure.")], script=["stop please"], vad=False) as r:
        r.session.push_text("hours?")
        await r.audio.wait_played("turn-1", 300)
        r.speak(10, then_quiet=0)  # the fake STT sends an interim after 8 loud frames
        await r.call.wait(lambda: r.call.of(BargeIn))
        (cut,) = await r.call.wait_lines("assistant", 1)
        assert cut.interrupted and long.startswith(cut.text)


class DeafVAD:
    """A VAD that never hears anything (too quiet a caller for its threshold)."""

    def stream(self) -> DeafVAD:
        return self

    def process(self, ulaw: bytes) -> None:
        return None

    @property
    def speaking(self) -> bool:
        return False

    @property
    def voiced(self) -> bool:
        return False


async def test_words_the_vad_missed_still_end_a_turn_on_silence() -> None:
    stt = FakeSTT()
    async with (
        FakeChatServer([Reply(text="Hi!")]) as server,
        build(Options(api_key="sk-test", base_url=server.base_url), BuildContext()) as llm,
        FakeAudioOut() as audio,
    ):
        call = FakeCall(audio)
        engine = PipelineEngine(
            stt, llm, FakeTTS(), DeafVAD(), options=PipelineOptions(endpointing_ms=50, flush_grace_ms=50)
        )
        async with engine.session(call) as session:
            task = asyncio.get_running_loop().create_task(session.run())
            try:
                # A plain final (no end_of_utterance) that the VAD never heard being spoken.
                (stream,) = await stt.wait_streams(1)
                stream.inject(Transcript("hello", is_final=True))
                (user,) = await call.wait_lines("user", 1)
                assert user.text == "hello" and stt.flushes == 1
                await call.wait_lines("assistant", 1)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def test_say_speaks_verbatim_over_the_agent() -> None:
    """A voicemail message (say) cuts off the reply in progress and is spoken word for word."""
    long_reply = "This answer is long enough that it is still playing when the voicemail must start now."
    message = "Hi, this is Acme calling about your appointment. Please call us back."
    async with rig([Reply(text=long_reply, chunk_delay_secs=0.03)]) as r:
        r.session.push_text("tell me")
        await r.audio.wait_played("turn-1", 200)
        r.session.say(message)
        lines = await r.call.wait_lines("assistant", 2)
        assert lines[0].interrupted
        assert lines[1].text == message and not lines[1].interrupted
        assert [t for _, t in r.tts.calls][-1] == message
        assert len(r.server.requests) == 1  # the message never went through the model


async def test_say_before_the_call_starts_replaces_the_greeting() -> None:
    async with rig([], first_message="Hello there!") as r:
        r.session.say("Voicemail message.")  # before run() has had a chance to start
        (line,) = await r.call.wait_lines("assistant", 1)
        assert line.text == "Voicemail message."
        assert [t for _, t in r.tts.calls] == ["Voicemail message."]
