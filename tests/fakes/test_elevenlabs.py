"""The fake ElevenLabs server against the official `elevenlabs` SDK (HTTP and its websocket helper) and raw sockets."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from elevenlabs import AsyncElevenLabs, ElevenLabs
from elevenlabs.core.api_error import ApiError

from patterd.protocols import elevenlabs as wire
from tests.fakes.elevenlabs import MP3_FRAME, FakeElevenLabsServer

KEY = "el-test-key"
RACHEL = wire.PREMADE_VOICES["rachel"]


async def sdk_stream(
    server: FakeElevenLabsServer, text: str, *, key: str = KEY, voice: str = RACHEL, **kw: Any
) -> bytes:
    client = AsyncElevenLabs(api_key=key, base_url=server.base_url)
    out = b""
    async for chunk in client.text_to_speech.stream(voice, text=text, **kw):
        out += chunk
    return out


async def test_sdk_streams_ulaw_proportional_to_the_text() -> None:
    async with FakeElevenLabsServer(speed=0) as server:
        short = await sdk_stream(
            server, "Hello there.", output_format="ulaw_8000", model_id="eleven_flash_v2_5"
        )
        long = await sdk_stream(
            server, "Hello there. " * 10, output_format="ulaw_8000", model_id="eleven_flash_v2_5"
        )
    assert 8 * 60 * len("Hello there") <= len(short) <= 8 * 60 * len("Hello there.")
    assert len(long) > 9 * len(short)
    first = server.streams[0]
    assert first.query == {"output_format": "ulaw_8000"}  # the SDK sends it in the query, as the API wants
    assert (
        first.body is not None
        and first.body["text"] == "Hello there."
        and first.body["model_id"] == "eleven_flash_v2_5"
    )
    assert "xi-api-key" not in first.headers  # accepted, and never recorded


async def test_sdk_without_output_format_gets_mp3() -> None:
    async with FakeElevenLabsServer(speed=0) as server:
        audio = await sdk_stream(server, "Hello.")
    assert "output_format" not in server.streams[0].query
    assert audio.startswith(MP3_FRAME[:4]) and len(audio) % len(MP3_FRAME) == 0


async def test_sdk_sees_the_vendor_errors() -> None:
    async with FakeElevenLabsServer(speed=0) as server:
        with pytest.raises(ApiError) as wrong_key:
            await sdk_stream(server, "Hi.", key="nope", output_format="ulaw_8000")
        with pytest.raises(ApiError) as by_name:
            await sdk_stream(server, "Hi.", voice="Rachel", output_format="ulaw_8000")
        server.fail_next(429)
        with pytest.raises(ApiError) as limited:
            await sdk_stream(server, "Hi.", output_format="ulaw_8000")
        with pytest.raises(ApiError) as bad_format:
            await sdk_stream(server, "Hi.", output_format="wav_8000")
    assert wrong_key.value.status_code == 401
    assert by_name.value.status_code == 404
    assert limited.value.status_code == 429
    assert bad_format.value.status_code == 400
    assert [s for _, s in server.refused] == [
        "invalid_api_key",
        "voice_not_found",
        "too_many_concurrent_requests",
        "invalid_output_format",
    ]
    assert server.streams == []


async def test_sdk_reads_a_voice_and_the_voice_list() -> None:
    async with FakeElevenLabsServer() as server:
        client = AsyncElevenLabs(api_key=KEY, base_url=server.base_url)
        voice = await client.voices.get(RACHEL)
        listing = await client.voices.get_all()
    assert voice.voice_id == RACHEL and voice.name == "Rachel"
    assert RACHEL in {v.voice_id for v in listing.voices}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the SDK's websocket helper always uses wss)."""
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# The SDK reads ConnectionClosed.code, which websockets ≥13.1 deprecates, when the server closes 1000.
@pytest.mark.filterwarnings("ignore:ConnectionClosed.code is deprecated:DeprecationWarning")
async def test_sdk_websocket_helper_speaks_to_the_fake(
    tls: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the SDK's wss connection trusts the fake's certificate
    async with FakeElevenLabsServer(speed=0, ssl_context=context) as server:
        client = ElevenLabs(api_key=KEY, base_url=f"https://127.0.0.1:{server.port}")

        def run() -> bytes:
            pieces = iter(["Thanks for calling, ", "how can I help you today?"])
            return b"".join(
                client.text_to_speech.convert_realtime(
                    RACHEL, text=pieces, model_id="eleven_flash_v2_5", output_format="ulaw_8000"
                )
            )

        audio = await asyncio.to_thread(run)
    stream = server.streams[0]
    assert stream.transport == "websocket" and stream.completed and stream.close_code == 1000
    assert stream.messages[0]["text"] == " " and stream.messages[-1] == {"text": ""}
    assert "".join(stream.texts).split() == [
        "Thanks",
        "for",
        "calling,",
        "how",
        "can",
        "I",
        "help",
        "you",
        "today?",
    ]
    assert len(audio) >= 8 * 60 * len("Thanks for calling, how can I help you today")


# ------------------------------------------------------------------ the websocket rules, over a raw socket


async def ws_run(
    server: FakeElevenLabsServer, messages: list[str], query: str = ""
) -> tuple[list[dict[str, Any]], int | None]:
    url = wire.ws_url(server.base_url, RACHEL, "eleven_flash_v2_5", "ulaw_8000") + query
    received: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=wire.headers(KEY)) as ws:
        for message in messages:
            await ws.send_str(message)
        async for msg in ws:
            received.append(json.loads(msg.data))
        return received, ws.close_code


async def test_ws_holds_text_until_120_characters_or_flush() -> None:
    async with FakeElevenLabsServer(speed=0) as server:
        short = "Hello there, how are you? "
        await ws_run(server, [wire.ws_open(), wire.ws_text(short), wire.ws_text(short), wire.ws_close()])
        await ws_run(
            server, [wire.ws_open(), wire.ws_text(short, flush=True), wire.ws_text(short), wire.ws_close()]
        )
        long = "x" * 125
        received, code = await ws_run(
            server, [wire.ws_open(), wire.ws_text(long), wire.ws_text(short), wire.ws_close()]
        )
        await ws_run(
            server,
            [wire.ws_open(), wire.ws_text(short), wire.ws_text(short), wire.ws_close()],
            "&auto_mode=true",
        )
    held, flushed, over, auto = (s.texts for s in server.streams)
    assert held == [short + short]  # 52 characters: nothing spoken until the end of input
    assert flushed == [short, short]
    assert over == [long + " ", short]
    assert auto == [short, short]
    assert received[-1] == {"isFinal": True} and all("audio" in m for m in received[:-1]) and code == 1000


async def test_ws_first_message_must_be_a_space_and_key_may_come_in_it() -> None:
    async with FakeElevenLabsServer(speed=0) as server:
        received, code = await ws_run(server, [wire.ws_text("Hello", flush=True)])
        assert code == 1008 and received[0]["error"] == "invalid_message"
        url = wire.ws_url(server.base_url, RACHEL, "eleven_flash_v2_5", "ulaw_8000")
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"text": " ", "xi-api-key": "wrong"}))
            message = await ws.receive_json()
            assert message["error"] == "invalid_api_key"
            await ws.receive()
            assert ws.close_code == 1008


async def test_ws_closes_after_the_inactivity_timeout() -> None:
    async with FakeElevenLabsServer(speed=0) as server:
        received, code = await ws_run(
            server, [wire.ws_open(), wire.ws_text("Hi.", flush=True)], "&inactivity_timeout=1"
        )
    assert code == 1008
    assert received[-1]["error"] == "input_timeout_exceeded"
    assert not any(m.get("isFinal") for m in received)  # isFinal only follows the end-of-input message


async def test_http_drop_cuts_the_connection_mid_stream() -> None:
    async with FakeElevenLabsServer() as server:
        server.drop_next()
        with pytest.raises(aiohttp.ClientPayloadError):
            async with aiohttp.ClientSession() as http:
                url = wire.stream_url(server.base_url, RACHEL, "ulaw_8000")
                async with http.post(
                    url, json=wire.stream_body("Hello. " * 20, "eleven_flash_v2_5"), headers=wire.headers(KEY)
                ) as r:
                    await r.read()
    assert server.streams[0].cancelled and not server.streams[0].completed
