"""The AssemblyAI fake is faithful: the official `assemblyai` SDK (1.8.2) streams against it; it refuses what AssemblyAI refuses."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from assemblyai.streaming.v3 import (
    AsyncRealTimeTranscriber,
    BeginEvent,
    RealTimeError,
    RealTimeEvents,
    RealTimeParameters,
    RealTimeTranscriberOptions,
    TerminationEvent,
    TurnEvent,
)

from patterd.testing import wait_until
from tests.fakes.assemblyai import FakeAssemblyAIServer, Fault
from tests.fakes.deepgram import silence, tone_ulaw

KEY = "aai-test-key"
# The SDK reads ConnectionClosed.code, which websockets >= 13.1 deprecates; not the fake's concern.
pytestmark = pytest.mark.filterwarnings("ignore:ConnectionClosed.code is deprecated:DeprecationWarning")


def chunks(audio: bytes, size: int = 800) -> list[bytes]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


async def sdk_session(
    fake: FakeAssemblyAIServer, key: str, audio: bytes, *, force: bool = False
) -> dict[str, list[Any]]:
    """Run the SDK's async client against the fake; every event it dispatched, by kind."""
    seen: dict[str, list[Any]] = {"begin": [], "turn": [], "termination": [], "error": []}
    client = AsyncRealTimeTranscriber(
        RealTimeTranscriberOptions(api_key=key, api_host=fake.base_url, max_connection_retries=0)
    )
    client.on(RealTimeEvents.Begin, lambda _c, e: seen["begin"].append(e))
    client.on(RealTimeEvents.Turn, lambda _c, e: seen["turn"].append(e))
    client.on(RealTimeEvents.Termination, lambda _c, e: seen["termination"].append(e))
    client.on(RealTimeEvents.Error, lambda _c, e: seen["error"].append(e))
    await client.connect(
        RealTimeParameters(
            speech_model="universal-streaming-english",
            sample_rate=8000,
            encoding="pcm_mulaw",
            format_turns=True,
            keyterms_prompt=["Patter"],
        )
    )
    if not seen["error"]:
        await wait_until(lambda: bool(seen["begin"] or seen["error"]), 5, "Begin")
    if seen["begin"]:
        await client.stream(chunks(audio))
        if force:
            await client.force_endpoint()
    await client.disconnect(terminate=True)
    return seen


async def test_the_sdk_streams_turns_partials_then_a_formatted_final() -> None:
    async with FakeAssemblyAIServer(KEY) as fake:
        fake.say("book a table for two")
        seen = await sdk_session(fake, KEY, tone_ulaw(1200) + silence(600))
    assert not seen["error"], seen["error"]
    assert isinstance(seen["begin"][0], BeginEvent)
    turns: list[TurnEvent] = seen["turn"]
    partials = [t for t in turns if not t.end_of_turn]
    assert partials and all(not t.turn_is_formatted for t in partials)
    ended = [t for t in turns if t.end_of_turn]
    assert [t.turn_is_formatted for t in ended] == [False, True]
    assert ended[0].transcript == "book a table for two"
    assert ended[1].transcript == "Book a table for two."
    assert all(w.word_is_final for w in ended[0].words)
    assert isinstance(seen["termination"][0], TerminationEvent)
    session = fake.sessions[0]
    assert session.headers["Authorization"] == KEY  # the key alone, no scheme
    assert session.query["keyterms_prompt"] == '["Patter"]'
    assert session.controls == ["Terminate"]
    assert session.close_code == 1000


async def test_the_sdk_force_endpoint_ends_the_turn_without_silence() -> None:
    async with FakeAssemblyAIServer(KEY) as fake:
        fake.say("hello there")
        seen = await sdk_session(fake, KEY, tone_ulaw(800), force=True)
    ended = [t for t in seen["turn"] if t.end_of_turn]
    assert [t.transcript for t in ended] == ["hello there", "Hello there."]
    assert fake.sessions[0].controls == ["ForceEndpoint", "Terminate"]


async def test_the_sdk_sees_a_wrong_key_as_error_1008() -> None:
    async with FakeAssemblyAIServer(KEY) as fake:
        seen = await sdk_session(fake, "wrong", b"")
    errors = seen["error"]
    assert errors and all(isinstance(e, RealTimeError) for e in errors)
    assert fake.sessions[0].close_code == 1008


async def test_the_sdk_sees_a_refused_handshake_status() -> None:
    async with FakeAssemblyAIServer(KEY) as fake:
        fake.fail(Fault(status=429))
        seen = await sdk_session(fake, KEY, b"")
    assert seen["error"] and seen["error"][0].code == 429


async def raw(
    fake: FakeAssemblyAIServer, headers: dict[str, str], query: str
) -> tuple[int | None, list[Any]]:
    """A bare websocket client: the close code and the messages before it."""
    got: list[Any] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{fake.base_url}/v3/ws?{query}", headers=headers) as ws:
            await ws.send_bytes(b"\xff" * 160)  # 20 ms: too short
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    got.append(json.loads(msg.data))
            return ws.close_code, got


@pytest.mark.parametrize(
    ("headers", "query", "code"),
    [
        ({"Authorization": f"Bearer {KEY}"}, "speech_model=x&sample_rate=8000&encoding=pcm_mulaw", 1008),
        ({"Authorization": KEY}, "sample_rate=8000&encoding=pcm_mulaw", 3006),
        ({"Authorization": KEY}, "speech_model=x&sample_rate=8000&encoding=mulaw", 3006),
        ({"Authorization": KEY}, "speech_model=x&sample_rate=8000&encoding=pcm_mulaw", 3007),
    ],
)
async def test_what_assemblyai_refuses_the_fake_refuses(
    headers: dict[str, str], query: str, code: int
) -> None:
    async with FakeAssemblyAIServer(KEY) as fake:
        close_code, got = await raw(fake, headers, query)
    assert close_code == code
    assert got[-1]["type"] == "Error" and got[-1]["error_code"] == code


async def test_token_probe_needs_the_key() -> None:
    async with FakeAssemblyAIServer(KEY) as fake, aiohttp.ClientSession() as http:
        url = fake.base_url.replace("ws://", "http://") + "/v3/token?expires_in_seconds=60"
        async with http.get(url, headers={"Authorization": KEY}) as ok:
            assert ok.status == 200 and "token" in await ok.json()
        async with http.get(url, headers={"Authorization": "nope"}) as bad:
            assert bad.status == 401
    await asyncio.sleep(0)
