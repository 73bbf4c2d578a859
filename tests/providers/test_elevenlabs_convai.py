"""engine.elevenlabs_convai against the fake ElevenLabs Agents server over real sockets, and through EngineSuite."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from patterd.cost import price_usage
from patterd.errors import ProviderAuthError, ProviderError
from patterd.protocols.events import BargeIn, TranscriptLine, Usage
from patterd.providers.elevenlabs_convai import (
    SPEC,
    ConvAIEngine,
    ConvAISession,
    ElevenLabsConvAIOptions,
    build,
    check,
)
from patterd.providers.kinds import ToolSchema
from patterd.providers.spec import BuildContext
from patterd.testing import EngineSuite, RecordingCall, Setup, wait_until
from patterd.testing.audio import frames, silent_ulaw, voiced_ulaw
from tests.fakes.elevenlabs_convai import AGENT_ID, API_KEY, Agent, CallTool, FakeConvAIServer, Reply, Say

TIMEOUT = 10.0


def options(fake: FakeConvAIServer, **extra: Any) -> ElevenLabsConvAIOptions:
    values: dict[str, Any] = {
        "agent_id": AGENT_ID,
        "api_key": API_KEY,
        "base_url": fake.http_url,
        "retry_backoff_secs": 0.01,
        "connect_timeout_secs": 3.0,
        **extra,
    }
    return ElevenLabsConvAIOptions(**values)


@asynccontextmanager
async def session(
    fake: FakeConvAIServer, call: RecordingCall, **extra: Any
) -> AsyncIterator[tuple[ConvAIEngine, ConvAISession, asyncio.Task[None]]]:
    async with build(options(fake, **extra), BuildContext()) as engine, engine.session(call) as s:
        task = asyncio.create_task(s.run())
        try:
            yield engine, s, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ProviderError):
                await task


async def until(call: RecordingCall, task: asyncio.Task[None], predicate: Any, what: str) -> None:
    def done() -> bool:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
        return bool(predicate())

    await wait_until(done, TIMEOUT, what)


async def speak(s: ConvAISession, ms: int = 600, silence_ms: int = 600) -> None:
    """The caller talks in real time (the fake's VAD is on the audio timeline)."""
    for frame in frames(voiced_ulaw(ms) + silent_ulaw(silence_ms)):
        s.push_audio(frame)
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------ the behavioural suite


class ConvAIControl:
    """EngineControl over FakeConvAIServer."""

    def __init__(self, fake: FakeConvAIServer) -> None:
        self.fake = fake

    def queue_reply(self, text: str) -> None:
        self.fake.replies.append(Say(text))

    def fail_next(self, status: int) -> None:
        self.fake.refuse_next.append(status)

    def drop_live(self) -> None:
        self.fake.drop_all()

    def ready_sessions(self) -> int:
        return len(self.fake.initiations)

    def open_connections(self) -> int:
        return self.fake.live


@asynccontextmanager
async def convai_setup() -> AsyncIterator[Setup[Any, ConvAIControl]]:
    async with FakeConvAIServer(pace=20) as fake:
        yield Setup(
            provider="elevenlabs_convai",
            key_variable="ELEVENLABS_API_KEY",
            build=lambda: build(options(fake), BuildContext()),
            build_bad_key=lambda: build(options(fake, api_key="xi-wrong"), BuildContext()),
            control=ConvAIControl(fake),
            check=check,
            features=frozenset({"barge_in_by_audio"}),
        )


@pytest.mark.parametrize("case", EngineSuite.cases())
async def test_engine_suite(case: str) -> None:
    await EngineSuite(convai_setup).run(case)


# ------------------------------------------------------------------ provider specifics


async def test_initiation_turns_latency_usage_and_pings() -> None:
    agent = Agent(first_message="")
    async with FakeConvAIServer(
        agent=agent,
        replies=[Say("Your order ships tomorrow.")],
        transcripts=["Where is my order?"],
        pace=20,
        ping_secs=0.2,
    ) as fake:
        call = RecordingCall(instructions="You are Ada from Acme.", first_message="Hello from Acme.")
        call.variables = {"customer": "Bob"}  # type: ignore[attr-defined]
        async with session(fake, call, voice_id="voice_x", language="it") as (_, s, task):
            await until(call, task, lambda: call.lines("assistant"), "the greeting")
            await speak(s)
            await until(call, task, lambda: len(call.lines("assistant")) >= 2, "the answer")
            await fake.wait_for(lambda: len(fake.pong_ms) >= 2)
        init = fake.initiations[0]
        assert init["conversation_config_override"] == {
            "agent": {
                "prompt": {"prompt": "You are Ada from Acme."},
                "first_message": "Hello from Acme.",
                "language": "it",
            },
            "tts": {"voice_id": "voice_x"},
        }
        assert init["dynamic_variables"] == {"customer": "Bob"}
        # The private agent was reached through a fresh signed URL.
        assert fake.requests[:2] == [
            ("GET", "/v1/convai/conversation/get-signed-url"),
            ("WS", "/v1/convai/conversation"),
        ]
        assert [line.text for line in call.lines("assistant")] == [
            "Hello from Acme.",
            "Your order ships tomorrow.",
        ]
        assert [line.text for line in call.lines("user")] == ["Where is my order?"]
        roles = [e.role for e in call.events if isinstance(e, TranscriptLine)]
        assert roles == ["assistant", "user", "assistant"]  # the caller's line before its answer
        answer = call.lines("assistant")[1]
        assert answer.engine_ms is not None and 0 < answer.engine_ms < 5000
        assert len(call.speech_ends) == 1
        assert fake.bad_pongs == 0 and max(fake.pong_ms) < 500, fake.pong_ms
        usage = call.of(Usage)
        seconds = sum(u.quantities["audio_seconds"] for u in usage)
        assert all(u.provider == "elevenlabs_convai" for u in usage) and seconds > 0.5
        assert price_usage("elevenlabs_convai", {"audio_seconds": 60.0}) == pytest.approx(0.10)


async def test_interruption_clears_and_drops_stale_audio() -> None:
    long = " ".join(["Our opening hours are nine to five on weekdays."] * 6)
    async with FakeConvAIServer(
        replies=[Say(long)], transcripts=["wait"], pace=3, response_first=True
    ) as fake:
        call = RecordingCall()
        async with session(fake, call) as (_, s, task):
            s.push_text("hours?")
            await until(call, task, lambda: call.ear.total_bytes > 4000, "agent audio")
            await speak(s, 300, 500)
            await until(call, task, lambda: call.of(BargeIn), "the barge-in")
            # Audio of the interrupted reply still in flight (event_id ≤ the interruption's) is never played.
            cut = next(m for m in fake.sent if m["type"] == "interruption")["interruption_event"]["event_id"]
            audio = {"audio_base_64": base64.b64encode(b"\xff" * 800).decode(), "event_id": cut}
            await fake.inject(json.dumps({"type": "audio", "audio_event": audio}))
            # A ping behind it: its pong proves the audio frame was handled first.
            await fake.inject(json.dumps({"type": "ping", "ping_event": {"event_id": 999}}))
            await fake.wait_for(lambda: fake.bad_pongs == 1)
        assert call.ear.interrupts == 1 and fake.interruptions == 1
        line = call.lines("assistant")[0]
        assert line.interrupted
        # The line is the agent_response_correction: what was said before the cut.
        assert line.text.endswith("...") and len(line.text) < len(long), line.text
        assert sum(call.ear.bytes_after_interrupt.values()) == 0


async def test_client_tool_call_runs_patterd_tool() -> None:
    tools = [ToolSchema("lookup_order", "Find an order", {"type": "object", "properties": {}})]
    replies: list[Reply] = [
        CallTool("lookup_order", {"order": "A1"}),
        Say("It ships today."),
        CallTool("not_a_tool"),
    ]
    async with FakeConvAIServer(replies=replies, pace=50) as fake:
        call = RecordingCall(tools=tools, tool_results={"lookup_order": '{"status": "shipped"}'})
        async with session(fake, call) as (_, s, task):
            s.push_text("where is A1?")
            await until(call, task, lambda: call.lines("assistant"), "the answer after the tool")
            s.push_text("and the other?")
            await fake.wait_for(lambda: len(fake.tool_results) == 2)
        assert call.tool_calls == [("lookup_order", {"order": "A1"})]
        first, second = fake.tool_results
        assert first["result"] == '{"status": "shipped"}' and first["is_error"] is False
        assert second["is_error"] is True and "not_a_tool" in second["result"]
        assert fake.bad_tool_results == 0


async def test_pcm_agent_is_transcoded() -> None:
    agent = Agent(input_format="pcm_16000", output_format="pcm_16000")
    async with FakeConvAIServer(
        agent=agent, replies=[Say("Hello there.")], transcripts=["hi"], pace=20
    ) as fake:
        call = RecordingCall()
        async with session(fake, call) as (_, s, task):
            await speak(s)
            await until(call, task, lambda: call.lines("assistant"), "the answer")
            assert s.formats == ("pcm_16000", "pcm_16000")
        # 16 kHz PCM up (2 bytes a sample, twice the rate): 4x the μ-law bytes pushed.
        assert fake.audio_bytes_in > 4 * 160 * 40
        assert fake.user_turns == ["hi"]
        assert call.ear.total_bytes > 4000


async def test_public_agent_and_errors() -> None:
    async with FakeConvAIServer(agent=Agent(private=False), replies=[Say("Hi.")], pace=50) as fake:
        call = RecordingCall()
        async with session(fake, call, private=False, api_key=None) as (_, s, task):
            s.push_text("hello")
            await until(call, task, lambda: call.lines("assistant"), "the answer")
        assert ("GET", "/v1/convai/conversation/get-signed-url") not in fake.requests
    async with FakeConvAIServer() as fake:
        # A refused override closes the conversation; a wrong agent is a clear error.
        fake.agent.allowed_overrides = frozenset()
        call = RecordingCall(first_message="Hi")
        async with build(options(fake, max_retries=0), BuildContext()) as engine, engine.session(call) as s:
            with pytest.raises(ProviderError, match="1008"):
                await s.run()
        async with build(options(fake, agent_id="agent_nope"), BuildContext()) as engine:
            with pytest.raises(ProviderError, match="agent_nope"):
                await check(engine)
        async with build(options(fake, api_key="xi-wrong"), BuildContext()) as engine:
            with pytest.raises(ProviderAuthError, match="ELEVENLABS_API_KEY") as info:
                await check(engine)
            assert "xi-wrong" not in str(info.value)


async def test_check_warns_about_pcm_formats(capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeConvAIServer(agent=Agent(output_format="pcm_22050")) as fake:
        async with build(options(fake), BuildContext()) as engine:
            await check(engine)
        assert "agent_output_audio_format is pcm_22050" in capsys.readouterr().out
        assert fake.requests == [("GET", f"/v1/convai/agents/{AGENT_ID}")]


async def test_malformed_server_frames_are_counted() -> None:
    async with FakeConvAIServer(replies=[Say("Still here.")], pace=50) as fake:
        call = RecordingCall()
        async with session(fake, call) as (_, s, task):
            await fake.wait_for(lambda: fake.live == 1 and len(fake.initiations) == 1)
            for raw in [
                "not json",
                "[1]",
                '{"type": "audio"}',
                '{"type": "ping", "ping_event": {"event_id": "x"}}',
                '{"type": "audio", "audio_event": {"audio_base_64": "@@", "event_id": 1}}',
                '{"type": "brand_new"}',
                '{"type": 5}',
            ]:
                await fake.inject(raw)
            s.push_text("hi")
            await until(call, task, lambda: call.lines("assistant"), "the answer after garbage")
        assert s.bad_frames == 6 and s.unknown_events == 1
        assert fake.connections == 1


def test_spec_and_options() -> None:
    assert SPEC.key == "engine.elevenlabs_convai"
    with pytest.raises(ValueError, match="agent_id"):
        ElevenLabsConvAIOptions(agent_id=None, api_key="k")
    with pytest.raises(ValueError, match="ELEVENLABS_API_KEY"):
        ElevenLabsConvAIOptions(agent_id="a", api_key=None)
    assert ElevenLabsConvAIOptions(agent_id="a", api_key=None, private=False).private is False


async def test_say_cuts_the_reply_and_asks_for_the_words() -> None:
    long = " ".join(["Let me read you our whole catalogue, item by item."] * 6)
    async with FakeConvAIServer(replies=[Say(long), Say("Please call us back.")], pace=3) as fake:
        call = RecordingCall()
        async with session(fake, call) as (_, s, task):
            s.push_text("hi")
            await until(call, task, lambda: call.ear.total_bytes > 4000, "agent audio")
            s.say("Please call us back.")
            await until(call, task, lambda: call.ear.interrupts == 1, "the carrier to be cleared")
            await fake.wait_for(lambda: len(fake.user_messages) == 2)
        assert fake.user_messages[1].endswith(": Please call us back.")
        assert "word for word" in fake.user_messages[1]
        # Audio of the cut reply that was still on its way never reached the caller.
        assert sum(call.ear.bytes_after_interrupt.values()) == 0
        assert call.lines("assistant")[0].interrupted  # the cut reply, reported when the next one began


async def test_reconnect_continues_without_greeting_again() -> None:
    async with FakeConvAIServer(replies=[Say("Hello."), Say("I am back.")], pace=50) as fake:
        call = RecordingCall(first_message="Welcome!")
        async with session(fake, call) as (_, s, task):
            await until(call, task, lambda: call.lines("assistant"), "the greeting")
            s.push_text("hi")
            await until(call, task, lambda: len(call.lines("assistant")) == 2, "the answer")
            fake.drop_all()
            await fake.wait_for(lambda: len(fake.initiations) == 2)
            s.push_text("still there?")
            await until(
                call, task, lambda: len(call.lines("assistant")) == 3, "the answer after the reconnect"
            )
        first, second = fake.initiations
        assert first["conversation_config_override"]["agent"]["first_message"] == "Welcome!"
        assert second["conversation_config_override"]["agent"]["first_message"] == ""
        assert (
            "assistant: Welcome!" in fake.contextual_updates[0]
            and "assistant: Hello." in fake.contextual_updates[0]
        )
        assert len(s.conversation_ids) == 2


async def test_cli_probe_warns_about_formats(tmp_path: Path) -> None:
    from tests.fakes.twilio import FakeTwilioRest

    async with FakeConvAIServer(agent=Agent(input_format="pcm_16000")) as fake, FakeTwilioRest() as rest:
        config = tmp_path / "patter.yaml"
        config.write_text(
            f"""carrier: {{type: twilio, account_sid: {rest.account_sid}, auth_token: {rest.auth_token},
  base_url: '{rest.base_url}'}}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: desk
    engine: {{type: elevenlabs_convai, agent_id: {AGENT_ID}, base_url: '{fake.http_url}'}}
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "PATTER", "ELEVENLABS"))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "patterd",
            "check",
            "--probe",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**env, "ELEVENLABS_API_KEY": API_KEY},
        )
        out = (await asyncio.wait_for(proc.communicate(), 120))[0].decode()
        assert proc.returncode == 0, out
        assert "asr.user_input_audio_format is pcm_16000" in out and "agents[0].engine: ok" in out, out
        assert API_KEY not in out
        assert fake.requests == [("GET", f"/v1/convai/agents/{AGENT_ID}")]


async def test_silent_link_is_found_by_keepalive_and_reconnected() -> None:
    async with FakeConvAIServer(replies=[Say("Hello."), Say("Back.")], pace=50) as fake:
        call = RecordingCall()
        async with session(fake, call, keepalive_secs=0.4) as (_, s, task):
            s.push_text("hi")
            await until(call, task, lambda: call.lines("assistant"), "the answer")
            fake.freeze_all()  # a peer that hangs: no pongs to the websocket pings
            await fake.wait_for(lambda: len(fake.initiations) == 2, timeout=5)
            s.push_text("hello?")
            await until(
                call, task, lambda: len(call.lines("assistant")) == 2, "the answer after the reconnect"
            )
        assert s.connects == 2
