"""A Twilio call through the real daemon with `tts.rime` (and offline STT) against tests/fakes/rime.py.

The greeting and a reply are spoken as two contexts (text + flush, until `done`) on one Rime
connection kept open between them, reach the caller's ear as 8 kHz μ-law, and the call's cost has a
Rime TTS part.
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
from tests.fakes.openai_chat import FakeChatServer, Reply
from tests.fakes.rime import FakeRimeServer
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e]

KEY = "rime-test-key"
TURN = "When are you open"
REPLY = "We open at nine tomorrow morning."
GREETING = "Hello, thanks for calling."


def config(carrier_url: str, rime_url: str) -> str:
    return f"""\
carrier: {{type: twilio, base_url: '{carrier_url}'}}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: support
    stt: {{type: offline}}
    tts: {{type: rime, speaker: astra, modelId: arcana, base_url: '{rime_url}'}}
    first_message: {GREETING}
    system_prompt: You are a helpful assistant.
"""


async def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # the fakes change on their own sockets


def assistant_lines(body: dict[str, Any]) -> int:
    return sum(1 for line in body["transcript"] if line["role"] == "assistant")


async def test_rime_call(tmp_path: Path) -> None:
    carrier = TwilioCarrier()
    await carrier.start()
    try:
        async with FakeRimeServer(KEY, speed=4.0) as rime, FakeChatServer(api_key="sk-test") as chat:
            path = tmp_path / "patter.yaml"
            path.write_text(config(carrier.rest.base_url, rime.base_url))
            env = {
                "RIME_API_KEY": KEY,
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
                await handle.wait_heard(4000, timeout=15)  # half a second of the greeting
                await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 1)
                chat.replies.append(Reply(text=REPLY))
                heard = handle.heard_bytes()
                await handle.say(spoken_ulaw(TURN))
                await wait(lambda: len(chat.requests) >= 1, 15, "the caller's turn to reach the LLM")
                await handle.wait_heard(heard + 8000, timeout=15)  # a second of the reply
                await wait(lambda: rime.completed >= 2, 15, "the reply's synthesis to finish")
                assert rime.texts()[:2] == [GREETING, REPLY], rime.texts()
                assert len(rime.connections) == 1, "the reply reused the greeting's connection"
                conn = rime.connections[0]
                assert conn.query["speaker"] == "astra" and conn.query["modelId"] == "arcana"
                assert conn.query["audioFormat"] == "mulaw" and conn.query["samplingRate"] == "8000"
                assert conn.headers["Authorization"] == f"Bearer {KEY}"
                assert conn.operations()[:2] == ["flush", "flush"]
                assert not rime.refused, rime.refused
                await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 2)
                await handle.hangup_from_far_end()
                directory = await wait_record(tmp_path / "records", handle.call_id, "completed", timeout=15)
            finally:
                await stack.aclose()
                await carrier.detach()
                await asyncio.to_thread(cm.__exit__, None, None, None)
            assert not handle.violations()
            # the daemon's exit closed the provider, and with it the pooled connection
            await wait(lambda: rime.open_sockets() == 0, 5, "the Rime connection to be closed")
    finally:
        await carrier.close()

    meta = json.loads((directory / "metadata.json").read_text())
    events = read_jsonl(directory / "events.jsonl")
    usage = {(e["data"]["component"], e["data"]["provider"]) for e in events if e["type"] == "usage"}
    assert ("tts", "rime") in usage, usage
    assert meta["cost"]["tts"] > 0, meta["cost"]
    assistants = [
        line["text"] for line in read_jsonl(directory / "transcript.jsonl") if line["role"] == "assistant"
    ]
    assert assistants[:2] == [GREETING, REPLY], assistants
    print(f"\n[tts.rime] cost {meta['cost']}")
