"""One Twilio call through the real daemon per streaming vendor (STT or TTS alone), each against its fake.

STT vendors (the other side offline): the caller's speech (espeak-ng) streams to the fake as μ-law; its
transcript reaches the LLM fake and the reply reaches the caller's ear. TTS vendors (offline STT): the
greeting and a reply are synthesized on one kept-open connection and reach the caller's ear. Either way
the call's cost has the vendor's part, and the vendor's socket is closed once the daemon is gone. What
each vendor's wire must look like is its row's check functions:

- soniox: the config message (mulaw 8 kHz, no api_key in it), the stream ended with the empty frame.
- speechmatics: audio after RecognitionStarted, ended with EndOfStream {last_seq_no}, closed 1000.
- assemblyai: 50-1000 ms chunks (the fake closes with 3007 otherwise), the formatted final reaches the
  LLM, Terminate and closed as soon as the call ends (AssemblyAI bills open time).
- lmnt: two flushes on one speech session (reused, not reopened), μ-law without the WAV header.
- rime: two contexts (text + flush, until `done`) on one connection kept open between them, 8 kHz μ-law.
- cartesia stt / tts: the μ-law stream ended with `close`; contexts on the one pre-opened TTS socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import run_daemon
from tests.e2e.scenarios import Api, TwilioCarrier, TwilioHandle, read_jsonl, wait_for, wait_record
from tests.fakes.assemblyai import FakeAssemblyAIServer
from tests.fakes.cartesia import FakeCartesiaServer
from tests.fakes.lmnt import FakeLMNTServer
from tests.fakes.openai_chat import FakeChatServer, Reply
from tests.fakes.rime import FakeRimeServer
from tests.fakes.soniox import FakeSonioxServer
from tests.fakes.speechmatics import FakeSpeechmaticsServer
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e]

TURN = "When are you open"
REPLY = "We open at nine tomorrow morning."
GREETING = "Hello, thanks for calling."
OFFLINE = "{type: offline}"


def assistant_lines(body: dict[str, Any]) -> int:
    return sum(1 for line in body["transcript"] if line["role"] == "assistant")


async def nothing(fake: Any, chat: FakeChatServer) -> None:
    """No check at this point of the call for this vendor."""


def no_check(fake: Any, chat: FakeChatServer) -> None:
    """No check at this point of the call for this vendor."""


@dataclass(frozen=True)
class Vendor:
    """One row: which fake, which config block, and what to check about the vendor's side (and when)."""

    provider: str  # the `type:` in the config and the provider name in Usage
    kind: str  # "stt" or "tts": the role it plays, the other one is offline
    env_key: str  # the API key variable the daemon reads
    key: str
    fake: Callable[[str], AbstractAsyncContextManager[Any]]  # key → the fake server
    block: Callable[[Any], str]  # the role's YAML flow mapping pointing at the fake
    closed: Callable[[Any], bool] | None  # the vendor's socket(s) are closed (None: not waited for)
    closed_what: str
    script_turn: bool  # the fake STT hears TURN next (STT vendors, and Cartesia's shared fake)
    before_call: Callable[[Any, FakeChatServer], Awaitable[None]] = nothing  # daemon up, no call yet
    during: Callable[[Any, FakeChatServer], Awaitable[None]] = nothing  # the reply has been heard
    after: Callable[[Any, FakeChatServer], None] = no_check  # daemon gone and the socket closed
    assistants_in_record: bool = False  # transcript.jsonl's first assistant lines are GREETING, REPLY


# ---------------------------------------------------------------------- per-vendor checks


async def turn_reached_llm(fake: Any, chat: FakeChatServer) -> None:
    assert TURN in json.dumps(chat.requests[0].body)


def soniox_after(soniox: FakeSonioxServer, chat: FakeChatServer) -> None:
    session = soniox.sessions[0]
    assert session.headers["Authorization"] == "Bearer soniox-test-key"
    assert session.config is not None and session.config["audio_format"] == "mulaw"
    assert session.config["sample_rate"] == 8000 and "api_key" not in session.config
    assert session.audio_bytes > 8000 and session.controls[-1] == "<empty>"


def speechmatics_after(sm: FakeSpeechmaticsServer, chat: FakeChatServer) -> None:
    session = sm.sessions[0]
    assert session.headers["Authorization"] == "Bearer sm-test-key"
    assert session.start is not None
    assert session.start["audio_format"] == {"type": "raw", "encoding": "mulaw", "sample_rate": 8000}
    assert session.audio_bytes > 8000 and session.names()[-1] == "EndOfStream"
    assert session.controls[-1]["last_seq_no"] == session.frames and session.close_code == 1000


def assemblyai_after(aai: FakeAssemblyAIServer, chat: FakeChatServer) -> None:
    session = aai.sessions[0]
    assert session.headers["Authorization"] == "aai-test-key"
    assert session.query["encoding"] == "pcm_mulaw" and session.query["sample_rate"] == "8000"
    assert session.audio_bytes > 8000 and all(50 <= ms <= 1000 for ms in session.chunk_ms)
    assert session.controls[-1] == "Terminate" and session.close_code == 1000
    assert "When are you open." in json.dumps(chat.requests[0].body)  # the formatted final


async def lmnt_during(lmnt: FakeLMNTServer, chat: FakeChatServer) -> None:
    await wait_for(lambda: lmnt.streams_completed() >= 2, 15, "the reply's synthesis to finish")
    assert lmnt.texts_received()[:2] == [GREETING, REPLY], lmnt.texts_received()
    assert len(lmnt.sessions) == 1, "the reply reused the greeting's session"
    session = lmnt.sessions[0]
    assert session.init["voice"] == "ava" and session.init["format"] == "ulaw"
    assert not lmnt.refused, lmnt.refused


async def rime_during(rime: FakeRimeServer, chat: FakeChatServer) -> None:
    await wait_for(lambda: rime.completed >= 2, 15, "the reply's synthesis to finish")
    assert rime.texts()[:2] == [GREETING, REPLY], rime.texts()
    assert len(rime.connections) == 1, "the reply reused the greeting's connection"
    conn = rime.connections[0]
    assert conn.query["speaker"] == "astra" and conn.query["modelId"] == "arcana"
    assert conn.query["audioFormat"] == "mulaw" and conn.query["samplingRate"] == "8000"
    assert conn.headers["Authorization"] == "Bearer rime-test-key"
    assert conn.operations()[:2] == ["flush", "flush"]
    assert not rime.refused, rime.refused


async def cartesia_stt_during(cartesia: FakeCartesiaServer, chat: FakeChatServer) -> None:
    assert TURN in json.dumps(chat.requests[0].body)
    session = cartesia.stt_sessions[0]
    assert session.query["encoding"] == "pcm_mulaw" and session.query["sample_rate"] == "8000"
    assert session.audio_bytes > 8000 and session.headers["X-API-Key"] == "sk_car_test"


def cartesia_stt_after(cartesia: FakeCartesiaServer, chat: FakeChatServer) -> None:
    assert cartesia.stt_sessions[0].commands[-1] == "close"


async def cartesia_tts_before(cartesia: FakeCartesiaServer, chat: FakeChatServer) -> None:
    # pre-opened when the daemon built the provider, before any call
    await wait_for(lambda: len(cartesia.tts_sockets) == 1, 10, "the pre-opened TTS socket")


async def cartesia_tts_during(cartesia: FakeCartesiaServer, chat: FakeChatServer) -> None:
    await wait_for(lambda: cartesia.streams_completed() >= 2, 15, "the reply's synthesis to finish")
    assert cartesia.texts_received()[:2] == [GREETING, REPLY], cartesia.texts_received()
    assert len(cartesia.tts_sockets) == 1, "one socket for the call's contexts"
    assert not cartesia.refused, cartesia.refused


def cartesia(key: str) -> FakeCartesiaServer:
    return FakeCartesiaServer(key, speed=4.0, max_silence_secs=0.3)


def cartesia_block(fake: FakeCartesiaServer) -> str:
    return f"{{type: cartesia, base_url: '{fake.base_url}'}}"


VENDORS = [
    Vendor(
        provider="soniox",
        kind="stt",
        env_key="SONIOX_API_KEY",
        key="soniox-test-key",
        fake=FakeSonioxServer,
        block=lambda fake: f"{{type: soniox, base_url: '{fake.base_url}'}}",
        closed=lambda fake: fake.open_connections == 0,
        closed_what="the Soniox socket to be closed",
        script_turn=True,
        during=turn_reached_llm,
        after=soniox_after,
    ),
    Vendor(
        provider="speechmatics",
        kind="stt",
        env_key="SPEECHMATICS_API_KEY",
        key="sm-test-key",
        fake=FakeSpeechmaticsServer,
        block=lambda fake: f"{{type: speechmatics, base_url: '{fake.url}'}}",
        closed=lambda fake: fake.open_connections == 0,
        closed_what="the Speechmatics socket to be closed",
        script_turn=True,
        during=turn_reached_llm,
        after=speechmatics_after,
    ),
    Vendor(
        provider="assemblyai",
        kind="stt",
        env_key="ASSEMBLYAI_API_KEY",
        key="aai-test-key",
        fake=FakeAssemblyAIServer,
        block=lambda fake: f"{{type: assemblyai, base_url: '{fake.base_url}'}}",
        closed=lambda fake: fake.open_connections == 0,
        closed_what="the AssemblyAI session to be closed",
        script_turn=True,
        during=turn_reached_llm,
        after=assemblyai_after,
    ),
    Vendor(
        provider="cartesia",
        kind="stt",
        env_key="CARTESIA_API_KEY",
        key="sk_car_test",
        fake=cartesia,
        block=cartesia_block,
        closed=lambda fake: fake.stt_open == 0,
        closed_what="the STT socket to be closed",
        script_turn=True,
        during=cartesia_stt_during,
        after=cartesia_stt_after,
        assistants_in_record=True,
    ),
    Vendor(
        provider="lmnt",
        kind="tts",
        env_key="LMNT_API_KEY",
        key="lmnt-test-key",
        fake=lambda key: FakeLMNTServer(key, speed=4.0),
        block=lambda fake: f"{{type: lmnt, voice: ava, base_url: '{fake.base_url}'}}",
        # the daemon's exit closed the provider, and with it the session
        closed=lambda fake: fake.open_connections() == 0,
        closed_what="the LMNT session to be closed",
        script_turn=False,
        during=lmnt_during,
        assistants_in_record=True,
    ),
    Vendor(
        provider="rime",
        kind="tts",
        env_key="RIME_API_KEY",
        key="rime-test-key",
        fake=lambda key: FakeRimeServer(key, speed=4.0),
        block=lambda fake: f"{{type: rime, speaker: astra, modelId: arcana, base_url: '{fake.base_url}'}}",
        # the daemon's exit closed the provider, and with it the pooled connection
        closed=lambda fake: fake.open_sockets() == 0,
        closed_what="the Rime connection to be closed",
        script_turn=False,
        during=rime_during,
        assistants_in_record=True,
    ),
    Vendor(
        provider="cartesia",
        kind="tts",
        env_key="CARTESIA_API_KEY",
        key="sk_car_test",
        fake=cartesia,
        block=cartesia_block,
        closed=None,  # the provider's pooled TTS socket; its close is not waited for here
        closed_what="",
        script_turn=True,  # the shared fake; the offline STT ignores it
        before_call=cartesia_tts_before,
        during=cartesia_tts_during,
        assistants_in_record=True,
    ),
]


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


@pytest.mark.parametrize("vendor", VENDORS, ids=[f"{v.kind}.{v.provider}" for v in VENDORS])
async def test_vendor_call(vendor: Vendor, tmp_path: Path) -> None:
    carrier = TwilioCarrier()
    await carrier.start()
    try:
        async with vendor.fake(vendor.key) as fake, FakeChatServer(api_key="sk-test") as chat:
            block = vendor.block(fake)
            path = tmp_path / "patter.yaml"
            path.write_text(
                config(
                    carrier.rest.base_url,
                    block if vendor.kind == "stt" else OFFLINE,
                    block if vendor.kind == "tts" else OFFLINE,
                )
            )
            env = {
                vendor.env_key: vendor.key,
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
                await vendor.before_call(fake, chat)
                handle = await carrier.inbound_call()
                assert isinstance(handle, TwilioHandle)
                await handle.wait_heard(4000, timeout=15)  # half a second of the greeting
                # Its line is written once it has been played out: the caller speaks after it.
                await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 1)
                if vendor.script_turn:
                    fake.say(TURN)
                chat.replies.append(Reply(text=REPLY))
                heard = handle.heard_bytes()
                await handle.say(spoken_ulaw(TURN))
                await wait_for(lambda: len(chat.requests) >= 1, 15, "the caller's turn to reach the LLM")
                await handle.wait_heard(heard + 8000, timeout=15)  # a second of the reply
                await vendor.during(fake, chat)
                await api.wait_call(handle.call_id, lambda body: assistant_lines(body) >= 2)
                await handle.hangup_from_far_end()
                directory = await wait_record(tmp_path / "records", handle.call_id, "completed", timeout=15)
            finally:
                await stack.aclose()
                await carrier.detach()
                await asyncio.to_thread(cm.__exit__, None, None, None)
            assert not handle.violations()
            if vendor.closed is not None:
                closed = vendor.closed
                await wait_for(lambda: closed(fake), 5, vendor.closed_what)
            vendor.after(fake, chat)
    finally:
        await carrier.close()

    meta = json.loads((directory / "metadata.json").read_text())
    events = read_jsonl(directory / "events.jsonl")
    usage = {(e["data"]["component"], e["data"]["provider"]) for e in events if e["type"] == "usage"}
    assert (vendor.kind, vendor.provider) in usage, usage
    assert meta["cost"][vendor.kind] > 0, meta["cost"]
    if vendor.assistants_in_record:
        assistants = [
            line["text"] for line in read_jsonl(directory / "transcript.jsonl") if line["role"] == "assistant"
        ]
        assert assistants[:2] == [GREETING, REPLY], assistants
    print(f"\n[{vendor.kind}.{vendor.provider}] cost {meta['cost']}")
