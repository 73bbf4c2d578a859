"""The fake Cartesia server speaks the documented protocol: the official `cartesia` SDK runs against it unchanged."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import pytest
from cartesia import AsyncCartesia

from tests.fakes.cartesia import DEFAULT_VOICES, FakeCartesiaServer, Fault, tone_ulaw

KEY = "sk_car_test"
VOICE = DEFAULT_VOICES[0]
HEADERS = {"X-API-Key": KEY, "Cartesia-Version": "2026-03-01"}
STT_QUERY = "model=ink-whisper&encoding=pcm_mulaw&sample_rate=8000&language=en"
ULAW_8K = {"container": "raw", "encoding": "pcm_mulaw", "sample_rate": 8000}


def sdk(server: FakeCartesiaServer, key: str = KEY) -> AsyncCartesia:
    # The TTS helper always takes wss:// unless told the websocket base (the STT one follows base_url).
    ws_base = f"ws://127.0.0.1:{server.port}"
    return AsyncCartesia(api_key=key, base_url=server.base_url, websocket_base_url=ws_base, max_retries=0)


async def test_official_sdk_stt_manual_finalize() -> None:
    async with FakeCartesiaServer(KEY) as server:
        server.say(["book a table", "for two"])
        client = sdk(server)
        events: list[Any] = []
        async with client.stt.manual_finalize.websocket(
            model="ink-whisper", encoding="pcm_mulaw", sample_rate=8000, language="en"
        ) as socket:
            await socket.send_raw(tone_ulaw(600))
            await socket.send_raw(tone_ulaw(10, amplitude=0) * 60)  # 600 ms silence: ink-whisper finalizes
            await socket.send_raw(tone_ulaw(400))
            await socket.send("finalize")
            await socket.send("close")
            async for event in socket:
                events.append(event)
                if event.type == "done":
                    break
        await client.close()
    kinds = [e.type for e in events]
    assert "flush_done" in kinds and kinds[-1] == "done", kinds
    finals = [e.text for e in events if e.type == "transcript" and e.is_final]
    assert "".join(finals) == "book a table for two", finals  # deltas join verbatim
    assert any(e.type == "transcript" and not e.is_final for e in events), "interim transcripts"
    session = server.stt_sessions[0]
    assert session.headers["Authorization"] == f"Bearer {KEY}" and session.headers["cartesia-version"]
    assert session.commands == ["finalize", "close"]


async def test_official_sdk_tts_context_continuations_and_cancel() -> None:
    async with FakeCartesiaServer(KEY, speed=None) as server:
        client = sdk(server)
        async with client.tts.websocket_connect() as conn:
            ctx = conn.context(model_id="sonic-3", voice={"id": VOICE}, output_format=ULAW_8K)
            await ctx.push("Hello there, ")
            await ctx.push("how are you?")
            await ctx.no_more_inputs()
            audio = b""
            async for event in ctx.receive():
                if event.type == "chunk":
                    audio += event.audio or b""
            assert event.type == "done"
            other = conn.context(model_id="sonic-3", voice={"id": VOICE}, output_format=ULAW_8K)
            await other.push("This one is cut short. " * 20)
            async for event in other.receive():
                assert event.type == "chunk"
                break
            await other.cancel()
        await client.close()
    assert server.texts_received()[0] == "Hello there, how are you?"
    assert len(audio) == 8 * server.ms_per_char * len("Hello there, how are you?")
    assert server.contexts()[1].cancelled and not server.contexts()[1].completed
    assert server.streams_completed() == 1


async def test_official_sdk_sees_auth_and_fault_errors() -> None:
    async with FakeCartesiaServer(KEY) as server:
        client = sdk(server, "wrong")
        with pytest.raises(Exception) as info:
            async with client.stt.manual_finalize.websocket(
                model="ink-whisper", encoding="pcm_mulaw", sample_rate=8000
            ):
                pass
        assert "401" in str(info.value)
        await client.close()
        good = sdk(server)
        voice = await good.voices.get(VOICE)
        assert voice.id == VOICE
        async with good.tts.websocket_connect() as conn:
            server.fail(Fault(status=429))  # open socket: the next generation request gets it
            ctx = conn.context(model_id="sonic-3", voice={"id": VOICE}, output_format=ULAW_8K)
            await ctx.push("hi", continue_=False)
            events = [e async for e in ctx.receive()]
        assert events[-1].type == "error" and events[-1].status_code == 429
        await good.close()


async def test_handshake_checks() -> None:
    async with FakeCartesiaServer(KEY) as server, aiohttp.ClientSession() as http:
        ws_base = f"ws://127.0.0.1:{server.port}"
        cases = [
            ({"Cartesia-Version": "2026-03-01"}, STT_QUERY, 401),  # no key
            ({"X-API-Key": KEY}, STT_QUERY, 400),  # no version
            ({"X-API-Key": KEY, "Cartesia-Version": "latest"}, STT_QUERY, 400),
            (HEADERS, "model=ink-whisper&encoding=mulaw&sample_rate=8000", 400),  # Deepgram's spelling
            (HEADERS, "model=ink-whisper&encoding=pcm_mulaw", 400),
        ]
        for headers, query, status in cases:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(f"{ws_base}/stt/websocket?{query}", headers=headers)
            assert info.value.status == status, (headers, query)
        async with http.get(f"{server.base_url}/voices/nope", headers=HEADERS) as response:
            assert response.status == 404 and (await response.json())["type"] == "error"
        async with http.ws_connect(f"{ws_base}/tts/websocket", headers=HEADERS) as ws:
            good = {
                "model_id": "sonic-3",
                "transcript": "hi",
                "voice": {"mode": "id", "id": VOICE},
                "output_format": ULAW_8K,
                "context_id": "a",
            }
            for bad in (
                {**good, "output_format": {**ULAW_8K, "sample_rate": 8001}},
                {**good, "voice": {"mode": "id", "id": "nope"}},
                {k: v for k, v in good.items() if k != "model_id"},
            ):
                await ws.send_str(json.dumps({**bad, "context_id": "bad"}))
                answer = json.loads((await ws.receive()).data)
                assert answer["type"] == "error" and answer["status_code"] == 400, answer
            await ws.send_str(json.dumps(good))
            audio = b""
            while (msg := json.loads((await ws.receive()).data))["type"] == "chunk":
                audio += base64.b64decode(msg["data"])
            assert msg == {"type": "done", "done": True, "status_code": 206, "context_id": "a"}
            assert len(audio) == 8 * server.ms_per_char * 2
            await ws.send_str(json.dumps({**good, "transcript": "again"}))  # a closed context
            assert json.loads((await ws.receive()).data)["status_code"] == 400


async def test_idle_tts_socket_is_closed() -> None:
    async with FakeCartesiaServer(KEY, idle_timeout_secs=0.2) as server, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"ws://127.0.0.1:{server.port}/tts/websocket", headers=HEADERS) as ws:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000
