"""The fake Deepgram server speaks the documented protocol: the official deepgram-sdk runs against it unchanged."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1Metadata,
    ListenV1Results,
    ListenV1UtteranceEnd,
)

from tests.fakes.deepgram import FakeDeepgramServer, Fault, silence, tone_ulaw

# deepgram-sdk 7.17 imports names that websockets ≥ 14 marks deprecated (its own compat shim).
pytestmark = pytest.mark.filterwarnings("ignore:websockets.*:DeprecationWarning")

KEY = "dg-test-key"
QUERY = "model=nova-3&encoding=mulaw&sample_rate=8000&interim_results=true&endpointing=300"


def sdk(server: FakeDeepgramServer, **kwargs: Any) -> AsyncDeepgramClient:
    env = DeepgramClientEnvironment(
        base=f"http://127.0.0.1:{server.port}",
        production=server.base_url,
        agent=server.base_url,
        agent_rest=f"http://127.0.0.1:{server.port}",
    )
    return AsyncDeepgramClient(environment=env, **({"api_key": KEY} | kwargs))


async def test_official_sdk_streams_and_reads_every_message_type() -> None:
    async with FakeDeepgramServer(interim_every_ms=200) as server:
        server.say("Hello there.", "What time do you open?")
        client = sdk(server)
        messages: list[Any] = []
        async with client.listen.v1.connect(
            model="nova-3",
            encoding="mulaw",
            sample_rate=8000,
            interim_results="true",
            endpointing=300,
            utterance_end_ms=1000,
            smart_format="true",
        ) as socket:
            for _ in range(2):
                await socket.send_media(tone_ulaw(600))
                await socket.send_media(silence(1200))
            await socket.send_close_stream()
            async for message in socket:
                messages.append(message)
    results = [m for m in messages if isinstance(m, ListenV1Results)]
    assert any(r.is_final is False for r in results), "interim results"
    finals = [r for r in results if r.is_final]
    assert [r.channel.alternatives[0].transcript for r in finals] == [
        "Hello there.",
        "What time do you open?",
    ]
    assert all(r.speech_final for r in finals)
    # 600 ms of speech then 300 ms of silence: the segment ends 900 ms in.
    assert finals[0].start == 0.0 and finals[0].duration == pytest.approx(0.9)
    assert finals[0].channel.alternatives[0].words[-1].punctuated_word == "there."
    ends = [m for m in messages if isinstance(m, ListenV1UtteranceEnd)]
    assert [e.last_word_end for e in ends] == [pytest.approx(0.6), pytest.approx(2.4)]
    assert isinstance(messages[-1], ListenV1Metadata) and messages[-1].duration == pytest.approx(3.6)
    session = server.sessions[0]
    assert session.headers["Authorization"] == f"Token {KEY}"
    assert session.controls == ["CloseStream"] and session.close_code == 1000
    assert session.audio_bytes == 2 * (4800 + 9600)


async def test_official_sdk_finalize_answers_from_finalize() -> None:
    async with FakeDeepgramServer() as server:
        server.say("book a table")
        client = sdk(server)
        async with client.listen.v1.connect(
            model="nova-3", encoding="mulaw", sample_rate=8000, endpointing=2000
        ) as socket:
            await socket.send_media(tone_ulaw(400) + silence(100))
            await socket.send_finalize()
            message = await socket.recv()
            await socket.send_keep_alive()
            await socket.send_close_stream()
    assert isinstance(message, ListenV1Results)
    assert message.from_finalize is True and message.is_final and not message.speech_final
    assert message.channel.alternatives[0].transcript == "book a table"
    assert server.sessions[0].controls == ["Finalize", "KeepAlive", "CloseStream"]


async def test_official_sdk_bearer_key_is_refused_with_401() -> None:
    async with FakeDeepgramServer() as server:
        client = sdk(server, access_token=KEY)  # Bearer is for temporary tokens, not API keys
        with pytest.raises(ApiError) as info:
            async with client.listen.v1.connect(model="nova-3", encoding="mulaw", sample_rate=8000):
                pass
    assert info.value.status_code == 401
    assert server.refused == [(401, "Invalid credentials.")] and not server.sessions


async def test_official_sdk_lists_projects_with_the_key() -> None:
    async with FakeDeepgramServer() as server:
        response = await sdk(server).manage.v1.projects.list()
        with pytest.raises(ApiError) as info:
            await sdk(server, api_key="wrong").manage.v1.projects.list()
    assert response.projects and response.projects[0].name == "fake"
    assert info.value.status_code == 401 and server.probes == 1


async def handshake(
    server: FakeDeepgramServer, query: str, key: str = KEY
) -> tuple[int, dict[str, str], Any]:
    """A raw websocket handshake: (status, headers, JSON body) of a refusal, or (101, {}, None)."""
    url = f"{server.base_url}/v1/listen?{query}"
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers={"Authorization": f"Token {key}"}) as ws:
                await ws.send_str(json.dumps({"type": "CloseStream"}))
                async for _ in ws:
                    pass
                return 101, {}, None
        except aiohttp.WSServerHandshakeError as exc:
            refused = exc.status
            assert "dg-error" in (exc.headers or {})
        # The same request without the upgrade shows the refusal's body.
        async with http.get(url, headers={"Authorization": f"Token {key}"}) as response:
            assert response.status == refused
            return response.status, dict(response.headers), await response.json()


@pytest.mark.parametrize(
    ("query", "status", "needle"),
    [
        (QUERY, 101, ""),
        ("model=nova-3&encoding=mulaw", 400, "sample_rate"),
        ("model=nova-3&sample_rate=8000", 400, "encoding"),
        ("model=nova-3&encoding=mulaw&sample_rate=8000&utterance_end_ms=1000", 400, "interim_results"),
        (QUERY + "&utterance_end_ms=500", 400, ">= 1000"),
        ("model=nova-2&encoding=mulaw&sample_rate=8000&keyterm=Acme", 400, "Nova-3"),
        (QUERY + "&keywords=Acme:2", 400, "keyterm"),
    ],
)
async def test_handshake_rules(query: str, status: int, needle: str) -> None:
    async with FakeDeepgramServer() as server:
        got, headers, body = await handshake(server, query)
    assert got == status
    if status != 101:
        assert needle in headers["dg-error"] and body["err_msg"] == headers["dg-error"]
        assert body["request_id"] == headers["dg-request-id"]


async def test_wrong_key_and_faults() -> None:
    async with FakeDeepgramServer() as server:
        status, headers, body = await handshake(server, QUERY, key="nope")
        assert status == 401 and headers["dg-error"] == "Invalid credentials."
        assert body["err_code"] == "INVALID_AUTH"
        server.fail(*[Fault(status=429, dg_error="Too many requests.")] * 2)  # one per request
        status, headers, _ = await handshake(server, QUERY)
        assert status == 429 and headers["dg-error"] == "Too many requests."


async def test_idle_stream_closes_with_1011_net0001_unless_kept_alive() -> None:
    async with FakeDeepgramServer(idle_timeout_secs=0.3) as server, aiohttp.ClientSession() as http:
        url = f"{server.base_url}/v1/listen?{QUERY}"
        async with http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}) as ws:
            for _ in range(4):  # 4 x 0.1 s of KeepAlive outlasts the 0.3 s window
                await ws.send_str(json.dumps({"type": "KeepAlive"}))
                await asyncio.sleep(0.1)
            assert not ws.closed
            message = await ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert message.data == 1011 and "dpgr.am/net0001" in str(message.extra)
        assert server.sessions[0].close_code == 1011


async def test_drop_and_malformed_faults() -> None:
    async with FakeDeepgramServer(interim_every_ms=100) as server, aiohttp.ClientSession() as http:
        server.fail(Fault(malformed=True, drop_after_results=1))
        url = f"{server.base_url}/v1/listen?{QUERY}"
        async with http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}) as ws:
            await ws.send_bytes(tone_ulaw(600))
            texts: list[str] = []
            async for message in ws:
                texts.append(message.data)
        assert texts[:4] == ["this is not json", '{"type": "Results"}', "[1, 2, 3]", texts[3]]
        assert json.loads(texts[4])["type"] == "Results" and len(texts) == 5  # then the connection drops
        await asyncio.wait_for(server.sessions[0].ended.wait(), 5)
        assert server.sessions[0].close_code is None and server.open_connections == 0
