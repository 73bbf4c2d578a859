"""A Twilio call through the real daemon with `stt.cartesia` (and offline TTS), then one with `tts.cartesia`
(and offline STT), each against tests/fakes/cartesia.py, so each provider is tested alone.

STT call: the caller's speech (espeak-ng) streams to the fake as μ-law; its transcript reaches the LLM fake.
TTS call: the greeting and a reply are synthesized as Cartesia contexts on the one pre-opened socket and
reach the caller's ear; the call's cost has a Cartesia TTS part.
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
from tests.fakes.cartesia import FakeCartesiaServer
from tests.fakes.openai_chat import FakeChatServer, Reply
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e]

KEY = "sk_car_test"
TURN = "When are you open"
REPLY = "We open at nine tomorrow morning."
GREETING = "Hello, thanks for calling."


def config(carrier_url: str, stt: str, tts: str) -> str:
    return f"""\
carrier: {{type: twilio, base_url: '{carrier_url}'}}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: support
    stt: {stt}
    tts: {tts}
    first_message: {GREETING}
    system_prompt: You are a helpful assistant.
"""


async def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # the fakes change on their own sockets


@pytest.mark.parametrize("kind", ["stt", "tts"])
async def test_cartesia_call(kind: str, tmp_path: Path) -> None:
    carrier = TwilioCarrier()
    await carrier.start()
    try:
        async with (
            FakeCartesiaServer(KEY, speed=4.0, max_silence_secs=0.3) as cartesia,
            FakeChatServer(api_key="sk-test") as chat,
        ):
            url = cartesia.base_url
            stt = f"{{type: cartesia, base_url: '{url}'}}" if kind == "stt" else "{type: offline}"
            tts = f"{{type: cartesia, base_url: '{url}'}}" if kind == "tts" else "{type: offline}"
            path = tmp_path / "patter.yaml"
            path.write_text(config(carrier.rest.base_url, stt, tts))
            env = {
                "CARTESIA_API_KEY": KEY,
                "OPENAI_API_KEY": "sk-test",
                "OPENAI_BASE_URL": chat.base_url,
                "TWILIO_ACCOUNT_SID": carrier.rest.account_sid,
                "TWILIO_AUTH_TOKEN": carrier.rest.auth_token,
                "PATTER_LOG_DIR": str(tmp_path / "records"),
            }
            directory = await one_call(kind, cartesia, chat, carrier, path, env, tmp_path)
    finally:
        await carrier.close()

    meta = json.loads((directory / "metadata.json").read_text())
    events = read_jsonl(directory / "events.jsonl")
    usage = {(e["data"]["component"], e["data"]["provider"]) for e in events if e["type"] == "usage"}
    assert (kind, "cartesia") in usage, usage
    assert meta["cost"][kind] > 0, meta["cost"]
    assistants = [
        line["text"] for line in read_jsonl(directory / "transcript.jsonl") if line["role"] == "assistant"
    ]
    assert assistants[:2] == [GREETING, REPLY], assistants
    print(f"\n[{kind}.cartesia] cost {meta['cost']}")


def assistant_lines(body: dict[str, Any]) -> int:
    return sum(1 for line in body["transcript"] if line["role"] == "assistant")


async def one_call(
    kind: str,
    cartesia: FakeCartesiaServer,
    chat: FakeChatServer,
    carrier: TwilioCarrier,
    config_path: Path,
    env: dict[str, str],
    tmp: Path,
) -> Path:
    cm = run_daemon(config_path, env=env)
    daemon = await asyncio.to_thread(cm.__enter__)
    stack = contextlib.AsyncExitStack()
    try:
        await carrier.attach(daemon.base_url)
        api = await stack.enter_async_context(Api(daemon.base_url))
        if kind == "tts":  # pre-opened when the daemon built the provider, before any call
            await wait(lambda: len(cartesia.tts_sockets) == 1, 10, "the pre-opened TTS socket")
        handle = await carrier.inbound_call()
        assert isinstance(handle, TwilioHandle)
        await handle.wait_heard(4000, timeout=15)  # half a second of the greeting
        # Its line is written once it has been played out: the caller speaks after it.
        await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 1)
        cartesia.say(TURN)
        chat.replies.append(Reply(text=REPLY))
        heard = handle.heard_bytes()
        await handle.say(spoken_ulaw(TURN))
        await wait(lambda: len(chat.requests) >= 1, 15, "the caller's turn to reach the LLM")
        await handle.wait_heard(heard + 8000, timeout=15)  # a second of the reply
        if kind == "stt":
            assert TURN in json.dumps(chat.requests[0].body)
            session = cartesia.stt_sessions[0]
            assert session.query["encoding"] == "pcm_mulaw" and session.query["sample_rate"] == "8000"
            assert session.audio_bytes > 8000 and session.headers["X-API-Key"] == KEY
        else:
            await wait(lambda: cartesia.streams_completed() >= 2, 15, "the reply's synthesis to finish")
            assert cartesia.texts_received()[:2] == [GREETING, REPLY], cartesia.texts_received()
            assert len(cartesia.tts_sockets) == 1, "one socket for the call's contexts"
            assert not cartesia.refused, cartesia.refused
        await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 2)
        await handle.hangup_from_far_end()
        directory = await wait_record(tmp / "records", handle.call_id, "completed", timeout=15)
    finally:
        await stack.aclose()
        await carrier.detach()
        await asyncio.to_thread(cm.__exit__, None, None, None)
    assert not handle.violations()
    if kind == "stt":
        await wait(lambda: cartesia.stt_open == 0, 5, "the STT socket to be closed")
        assert cartesia.stt_sessions[0].commands[-1] == "close"
    return directory
