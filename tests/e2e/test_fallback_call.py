"""A Twilio call through the real daemon survives its primary STT and primary TTS dying mid-call (fallback chains).

`stt: [deepgram A, deepgram B]` and `tts: [elevenlabs, offline]`: turn 1 runs on the primaries; in turn 2
Deepgram A is shut down while the caller speaks (B gets the open utterance re-fed and transcribes it) and
the ElevenLabs stream of the reply is cut after its first chunk (the sentence is spoken again by the
offline voice). The call completes; both switches are in events.jsonl and in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import pytest

from tests.daemon_process import run_daemon
from tests.e2e.scenarios import Api, TwilioCarrier, TwilioHandle, read_jsonl, wait_for, wait_record
from tests.fakes.deepgram import FakeDeepgramServer
from tests.fakes.elevenlabs import FakeElevenLabsServer
from tests.fakes.openai_chat import FakeChatServer, Reply
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e]

TURN = "When are you open"
REPLY = "We open at nine tomorrow morning."
SECOND = "And we close at five in the afternoon."
KEYS = {"DEEPGRAM_API_KEY": "dg-test-key", "ELEVENLABS_API_KEY": "el-test-key", "OPENAI_API_KEY": "sk-test"}


def config(carrier_url: str, dg_a: str, dg_b: str, el: str) -> str:
    return f"""\
carrier: {{type: twilio, base_url: '{carrier_url}'}}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: support
    stt:
      - {{type: deepgram, endpointing_ms: 80, base_url: '{dg_a}'}}
      - {{type: deepgram, endpointing_ms: 80, base_url: '{dg_b}'}}
    tts:
      - {{type: elevenlabs, voice_id: rachel, base_url: '{el}'}}
      - {{type: offline}}
    system_prompt: You are a helpful assistant.
"""


def crash(server: FakeDeepgramServer) -> None:
    """Abort every TCP connection the fake holds (a crashed upstream; its fault modes act only at connect)."""
    runner = server._runner
    assert runner is not None and runner.server is not None
    for handler in runner.server.connections:
        if handler.transport is not None:
            handler.transport.abort()


def longest_silence(times: list[float], sizes: list[int], start: float) -> float:
    """The longest pause in the caller's ear after `start`: agent audio played 8 bytes per ms as it arrives."""
    played_until: float | None = None
    longest = 0.0
    for at, size in zip(times, sizes, strict=True):
        if at < start:
            continue
        if played_until is not None and at > played_until:
            longest = max(longest, at - played_until)
        played_until = max(at, played_until or at) + size / 8000
    return longest


async def test_call_completes_after_the_primary_stt_and_tts_die(tmp_path: Path) -> None:
    carrier = TwilioCarrier()
    await carrier.start()
    stack = contextlib.AsyncExitStack()
    try:
        dg_a = await stack.enter_async_context(FakeDeepgramServer(KEYS["DEEPGRAM_API_KEY"]))
        dg_b = await stack.enter_async_context(FakeDeepgramServer(KEYS["DEEPGRAM_API_KEY"]))
        chat = await stack.enter_async_context(FakeChatServer(api_key=KEYS["OPENAI_API_KEY"]))
        el = await stack.enter_async_context(FakeElevenLabsServer(KEYS["ELEVENLABS_API_KEY"], speed=2.0))
        path = tmp_path / "patter.yaml"
        path.write_text(config(carrier.rest.base_url, dg_a.base_url, dg_b.base_url, el.base_url))
        env = {
            **KEYS,
            "OPENAI_BASE_URL": chat.base_url,
            "TWILIO_ACCOUNT_SID": carrier.rest.account_sid,
            "TWILIO_AUTH_TOKEN": carrier.rest.auth_token,
            "PATTER_LOG_DIR": str(tmp_path / "records"),
        }
        await run_call(path, env, carrier, dg_a, dg_b, chat, el, tmp_path)
    finally:
        await stack.aclose()
        await carrier.close()


async def run_call(
    path: Path,
    env: dict[str, str],
    carrier: TwilioCarrier,
    dg_a: FakeDeepgramServer,
    dg_b: FakeDeepgramServer,
    chat: FakeChatServer,
    el: FakeElevenLabsServer,
    tmp: Path,
) -> None:
    turn_audio = spoken_ulaw(TURN)
    cm = run_daemon(path, env=env)
    daemon = await asyncio.to_thread(cm.__enter__)
    stack = contextlib.AsyncExitStack()
    try:
        await carrier.attach(daemon.base_url)
        api = await stack.enter_async_context(Api(daemon.base_url))
        handle = await carrier.inbound_call()
        assert isinstance(handle, TwilioHandle)
        call_id = handle.call_id

        # Turn 1 on the primaries.
        dg_a.say(TURN)
        chat.replies.append(Reply(text=REPLY))
        await handle.say(turn_audio)
        await wait_for(lambda: len(chat.requests) >= 1, 15, "turn 1 to reach the LLM")
        await api.wait_call(call_id, lambda body: any(t["role"] == "assistant" for t in body["transcript"]))
        assert len(el.streams) == 1 and el.streams[0].completed

        # Turn 2: Deepgram A dies while the caller speaks; ElevenLabs drops the reply's stream.
        dg_b.say(TURN)
        chat.replies.append(Reply(text=f"{REPLY} {SECOND}"))
        el.drop_next()
        session = dg_a.sessions[0]
        before = session.audio_bytes
        await handle.call.say(turn_audio, wait=False)
        await wait_for(
            lambda: session.audio_bytes > before + 4000, 10, "half a second of turn 2 at Deepgram A"
        )
        crash(dg_a)  # the primary STT's connection dies mid-utterance, without a close frame
        await wait_for(lambda: len(chat.requests) >= 2, 15, "turn 2 (heard by Deepgram B) to reach the LLM")
        assert TURN in json.dumps(chat.requests[1].body)
        reply_started = time.monotonic()
        await api.wait_call(
            call_id,
            lambda body: sum(t["role"] == "assistant" for t in body["transcript"]) >= 2,
            timeout=20,
        )
        silence = longest_silence(handle.call.media_times, handle.call.media_frame_sizes, reply_started)
        print(f"longest silence in the reply across the TTS switch: {silence * 1000:.0f} ms")
        fallbacks = await api.metric("patterd_provider_fallbacks_total")
        stt_fallbacks = await api.metric(
            "patterd_provider_fallbacks_total",
            lambda line: 'kind="stt"' in line and 'from="deepgram[0]"' in line and 'to="deepgram[1]"' in line,
        )
        await handle.hangup_from_far_end()
        directory = await wait_record(tmp / "records", call_id, "completed", timeout=15)
    finally:
        await stack.aclose()
        await carrier.detach()
        await asyncio.to_thread(cm.__exit__, None, None, None)
    assert not handle.violations()
    assert silence < 1.0, f"{silence:.3f} s of silence at the TTS switch"
    assert fallbacks == 2 and stt_fallbacks == 1

    events = read_jsonl(directory / "events.jsonl")
    switches = [e["data"] for e in events if e["type"] == "provider_fallback"]
    assert [(s["kind"], s["from"], s["to"]) for s in switches] == [
        ("stt", "deepgram[0]", "deepgram[1]"),
        ("tts", "elevenlabs", "offline"),
    ], switches
    assert all(s["reason"] for s in switches)
    transcript = read_jsonl(directory / "transcript.jsonl")
    assert [t["text"] for t in transcript if t["role"] == "user"] == [TURN, TURN]
    assistants = [t["text"] for t in transcript if t["role"] == "assistant"]
    assert assistants[0] == REPLY and SECOND in assistants[1], assistants
    assert len(dg_b.sessions) == 1 and dg_b.sessions[0].finals() == [TURN]
    assert el.streams[1].cancelled, "the dropped ElevenLabs stream"
    usage = {(e["data"]["component"], e["data"]["provider"]) for e in events if e["type"] == "usage"}
    assert ("tts", "offline") in usage, usage
