"""A Twilio call through the real daemon with `stt.assemblyai` (and offline TTS) against tests/fakes/assemblyai.py.

The caller's speech (espeak-ng) streams to the fake as μ-law in 50-1000 ms chunks (the fake closes
with 3007 otherwise); the formatted final of the turn reaches the LLM fake and the reply reaches the
caller's ear; the call's cost has an AssemblyAI STT part, and the session is ended with Terminate
and closed as soon as the call ends (AssemblyAI bills open time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import run_daemon
from tests.e2e.scenarios import Api, TwilioCarrier, TwilioHandle, read_jsonl, wait_record
from tests.fakes.assemblyai import FakeAssemblyAIServer
from tests.fakes.openai_chat import FakeChatServer, Reply
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e]

KEY = "aai-test-key"
TURN = "When are you open"
REPLY = "We open at nine tomorrow morning."
GREETING = "Hello, thanks for calling."


async def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # the fakes change on their own sockets


def assistant_lines(body: dict[str, Any]) -> int:
    return sum(1 for line in body["transcript"] if line["role"] == "assistant")


async def test_assemblyai_call(tmp_path: Path) -> None:
    carrier = TwilioCarrier()
    await carrier.start()
    try:
        async with FakeAssemblyAIServer(KEY) as aai, FakeChatServer(api_key="sk-test") as chat:
            path = tmp_path / "patter.yaml"
            path.write_text(f"""\
carrier: {{type: twilio, base_url: '{carrier.rest.base_url}'}}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: support
    stt: {{type: assemblyai, base_url: '{aai.base_url}'}}
    tts: {{type: offline}}
    first_message: {GREETING}
    system_prompt: You are a helpful assistant.
""")
            env = {
                "ASSEMBLYAI_API_KEY": KEY,
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": chat.base_url,
                "TWILIO_ACCOUNT_SID": carrier.rest.account_sid,
                "TWILIO_AUTH_TOKEN": carrier.rest.auth_token,
                "PATTER_LOG_DIR": str(tmp_path / "records"),
            }
            cm = run_daemon(path, env=env)
            daemon = await asyncio.to_thread(cm.__enter__)
            stack = contextlib.AsyncExitStack()
            try:
                await carrier.attach(daemon.base_url)
                api = await stack.enter_async_context(Api(daemon.base_url))
                handle = await carrier.inbound_call()
                assert isinstance(handle, TwilioHandle)
                await handle.wait_heard(4000, timeout=15)
                await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 1)
                aai.say(TURN)
                chat.replies.append(Reply(text=REPLY))
                heard = handle.heard_bytes()
                await handle.say(spoken_ulaw(TURN))
                await wait(lambda: len(chat.requests) >= 1, 15, "the caller's turn to reach the LLM")
                await handle.wait_heard(heard + 8000, timeout=15)
                assert TURN in json.dumps(chat.requests[0].body)
                await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 2)
                await handle.hangup_from_far_end()
                directory = await wait_record(tmp_path / "records", handle.call_id, "completed", timeout=15)
            finally:
                await stack.aclose()
                await carrier.detach()
                await asyncio.to_thread(cm.__exit__, None, None, None)
            assert not handle.violations()
            await wait(lambda: aai.open_connections == 0, 5, "the AssemblyAI session to be closed")
    finally:
        await carrier.close()

    session = aai.sessions[0]
    assert session.headers["Authorization"] == KEY
    assert session.query["encoding"] == "pcm_mulaw" and session.query["sample_rate"] == "8000"
    assert session.audio_bytes > 8000 and all(50 <= ms <= 1000 for ms in session.chunk_ms)
    assert session.controls[-1] == "Terminate" and session.close_code == 1000
    assert "When are you open." in json.dumps(chat.requests[0].body)  # the formatted final
    meta = json.loads((directory / "metadata.json").read_text())
    events = read_jsonl(directory / "events.jsonl")
    usage = {(e["data"]["component"], e["data"]["provider"]) for e in events if e["type"] == "usage"}
    assert ("stt", "assemblyai") in usage, usage
    assert meta["cost"]["stt"] > 0, meta["cost"]
    print(f"\n[stt.assemblyai] cost {meta['cost']}")
