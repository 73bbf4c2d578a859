"""The fake Soniox server speaks the documented protocol: the official `soniox` SDK runs against it unchanged."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from soniox import AsyncSonioxClient
from soniox.errors import SonioxAPIError
from soniox.types import RealtimeEvent, RealtimeSTTConfig

from tests.fakes.deepgram import silence, tone_ulaw
from tests.fakes.soniox import FakeSonioxServer, Fault

KEY = "soniox-test-key"


def sdk(server: FakeSonioxServer, key: str = KEY) -> AsyncSonioxClient:
    return AsyncSonioxClient(
        api_key=key,
        api_base_url=f"http://127.0.0.1:{server.port}/v1",
        websocket_base_url=f"{server.base_url}/transcribe-websocket",
    )


CONFIG = RealtimeSTTConfig(
    model="stt-rt-v4",
    audio_format="mulaw",
    sample_rate=8000,
    num_channels=1,
    language_hints=["en"],
    enable_endpoint_detection=True,
)


async def test_official_sdk_streams_endpoints_finalizes_and_finishes() -> None:
    async with FakeSonioxServer(interim_every_ms=200) as server:
        server.say("Hello there.", "Book a table")
        events: list[RealtimeEvent] = []
        async with sdk(server).realtime.stt.connect(config=CONFIG) as session:
            await session.send_bytes(tone_ulaw(600) + silence(600), finish=False)
            await session.send_bytes(tone_ulaw(500), finish=False)
            await session.finalize()
            await session.keep_alive()
            await session.finish()
            async for event in session.receive_events():
                events.append(event)
    finals = [t.text for e in events for t in e.tokens if t.is_final]
    assert "".join(finals) == "Hello there.<end>Book a table<fin>"
    assert any(t.is_final is False for e in events for t in e.tokens), "non-final tokens first"
    assert events[-1].finished and events[-1].total_audio_proc_ms == 1700
    session_seen = server.sessions[0]
    assert session_seen.headers["Authorization"] == f"Bearer {KEY}"
    assert session_seen.config is not None and "api_key" not in session_seen.config
    assert session_seen.controls == ["finalize", "keepalive", "<empty>"]
    assert session_seen.audio_bytes == 8 * 1700


async def test_official_sdk_wrong_key_gets_error_401_in_band() -> None:
    async with FakeSonioxServer() as server:
        async with sdk(server, "wrong").realtime.stt.connect(config=CONFIG) as session:
            event = await session.receive_event()
            assert await session.receive_event() is None  # then the socket closes
    assert event is not None and event.error_code == 401 and event.error_message
    assert server.errors == [(401, "Invalid API key.")]


async def test_official_sdk_lists_models_and_sees_api_errors() -> None:
    async with FakeSonioxServer() as server:
        models = await sdk(server).models.list()
        with pytest.raises(SonioxAPIError) as info:
            await sdk(server, "wrong").models.list()
    assert models.models[0].id == "stt-rt-v4" and server.probes == 1
    assert info.value.status_code == 401


async def raw(server: FakeSonioxServer, first: str, key: str = KEY) -> list[dict[str, object]]:
    """What the fake answers a raw client sending `first` as its first message."""
    async with aiohttp.ClientSession() as http:
        url = f"{server.base_url}/transcribe-websocket"
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {key}"}) as ws:
            await ws.send_str(first)
            return [json.loads(m.data) async for m in ws]


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"model": "stt-rt-v4", "audio_format": "mulaw", "sample_rate": 8000}, "num_channels"),
        ({"audio_format": "mulaw", "sample_rate": 8000, "num_channels": 1}, "model"),
        (
            {"model": "m", "audio_format": "mulaw", "sample_rate": 8000, "num_channels": 1, "api_key": KEY},
            "both",
        ),
        (
            {
                "model": "m",
                "audio_format": "mulaw",
                "sample_rate": 8000,
                "num_channels": 1,
                "max_endpoint_delay_ms": 100,
            },
            "500",
        ),
    ],
)
async def test_config_rules(config: dict[str, object], needle: str) -> None:
    async with FakeSonioxServer() as server:
        answers = await raw(server, json.dumps(config))
    assert (
        len(answers) == 1 and answers[0]["error_code"] == 400 and needle in str(answers[0]["error_message"])
    )


async def test_idle_stream_gets_408_and_faults() -> None:
    async with FakeSonioxServer(idle_timeout_secs=0.2) as server:
        answers = await raw(server, CONFIG.model_dump_json(exclude_none=True))
        assert answers == [{"error_code": 408, "error_type": "error", "error_message": "Request timeout."}]
        server.fail(Fault(error_code=503), Fault(status=429))
        answers = await raw(server, CONFIG.model_dump_json(exclude_none=True))
        assert answers[0]["error_code"] == 503
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await raw(server, "{}")
        assert info.value.status == 429
        await asyncio.wait_for(server.sessions[-1].ended.wait(), 5)
        assert server.open_connections == 0
