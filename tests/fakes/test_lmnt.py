"""The fake LMNT server is faithful: the official `lmnt` SDK (2.13.0) speaks to it, and it refuses what LMNT refuses."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import lmnt
import pytest
from lmnt import AsyncLmnt
from lmnt.types import (
    SpeechSessionAudio,
    SpeechSessionError,
    SpeechSessionFlushComplete,
    SpeechSessionReady,
    SpeechSessionResetComplete,
)

from patterd.protocols.lmnt import wav_header
from tests.fakes.lmnt import FakeLMNTServer, render

KEY = "lmnt-test-key"


async def test_the_sdk_session_streams_text_flush_reset_and_finish() -> None:
    async with FakeLMNTServer(speed=0) as server:
        client = AsyncLmnt(api_key=KEY, base_url=server.base_url)
        session = await client.speech.sessions.create(
            voice="lily", format="ulaw", sample_rate=8000, language="en"
        )
        await session.send_text("Hello from the SDK.")
        flush = await session.send_flush()
        audio = b""
        events: list[Any] = []
        async for message in session:
            events.append(message)
            if isinstance(message, SpeechSessionAudio):
                audio += message.audio
            if isinstance(message, SpeechSessionFlushComplete):
                break
        assert isinstance(events[0], SpeechSessionReady) and session.request_id
        assert events[-1].nonce == flush
        # μ-law with a WAV header, as the SDK documents the `ulaw` format
        assert audio == wav_header(8000) + render("Hello from the SDK.", "ulaw", 8000, server.ms_per_char)

        reset = await session.send_reset()
        async for message in session:
            if isinstance(message, SpeechSessionResetComplete):
                assert message.nonce == reset
                break
        await session.send_text("Bye.")
        await session.send_finish()
        tail = b"".join([m.audio async for m in session if isinstance(m, SpeechSessionAudio)])
        assert tail == render("Bye.", "ulaw", 8000, server.ms_per_char)  # the header came once per session
        await session.close()
    s = server.sessions[0]
    assert s.init["lmnt-version"] == "1.2" and s.init["X-API-Key"] == KEY  # SDK 2.13 says 1.2
    assert [m["type"] for m in s.messages] == ["text", "flush", "reset", "text", "finish"]
    assert s.close_code == 1000 and [g.completed for g in s.generations] == [True, True]


async def test_the_sdk_sees_a_wrong_key_as_an_error_frame_then_the_close() -> None:
    async with FakeLMNTServer() as server:
        client = AsyncLmnt(api_key="wrong", base_url=server.base_url)
        session = await client.speech.sessions.create(voice="lily", format="pcm_s16le", sample_rate=16000)
        messages = [m async for m in session]
        assert len(messages) == 1 and isinstance(messages[0], SpeechSessionError)
        assert messages[0].error.type == "authentication_error" and messages[0].request_id
        await session.close()
    assert server.refused == ["authentication_error"]


async def test_the_sdk_account_probe_and_its_auth_error() -> None:
    async with FakeLMNTServer() as server:
        account = await AsyncLmnt(api_key=KEY, base_url=server.base_url).accounts.retrieve()
        assert account.plan.character_limit == 1_000_000
        with pytest.raises(lmnt.AuthenticationError):
            await AsyncLmnt(api_key="wrong", base_url=server.base_url, max_retries=0).accounts.retrieve()


async def test_pcm_audio_at_the_rate_asked() -> None:
    async with FakeLMNTServer(speed=0) as server:
        session = await AsyncLmnt(api_key=KEY, base_url=server.base_url).speech.sessions.create(
            voice="ava", format="pcm_s16le", sample_rate=16000
        )
        await session.send_text("Sixteen thousand.")
        await session.send_finish()
        audio = b"".join([m.audio async for m in session if isinstance(m, SpeechSessionAudio)])
        await session.close()
    assert audio == render("Sixteen thousand.", "pcm_s16le", 16000, server.ms_per_char)


async def _first_error(server: FakeLMNTServer, *frames: dict[str, Any] | str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.base_url + "/v1/ai/speech/stream") as ws,
    ):
        for frame in frames:
            await ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == "error":
                error: dict[str, Any] = json.loads(msg.data)["error"]
                closing = await ws.receive(timeout=5)
                assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1008
                return error
            assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg


GOOD_INIT = {"X-API-Key": KEY, "lmnt-version": "1.1", "voice": "lily", "format": "ulaw", "sample_rate": 8000}


@pytest.mark.parametrize(
    ("frames", "kind"),
    [
        (({"type": "text", "text": "no init first"},), "authentication_error"),
        (("not json",), "invalid_request_error"),
        (({**GOOD_INIT, "lmnt-version": "0.9"},), "invalid_request_error"),
        (({**GOOD_INIT, "voice": "nobody"},), "invalid_request_error"),
        (({**GOOD_INIT, "sample_rate": 44100},), "invalid_request_error"),
        (({**GOOD_INIT, "language": "klingon"},), "invalid_request_error"),
        (({**GOOD_INIT, "speed": 9},), "invalid_request_error"),
        ((GOOD_INIT, {"type": "speak", "text": "hi"}), "invalid_request_error"),
        ((GOOD_INIT, {"type": "flush"}), "invalid_request_error"),  # a flush needs its nonce
    ],
)
async def test_the_fake_refuses_what_lmnt_refuses(frames: tuple[Any, ...], kind: str) -> None:
    async with FakeLMNTServer() as server:
        error = await _first_error(server, *frames)
    assert error["type"] == kind and error["message"]


async def test_faults_fail_next_maps_statuses_to_error_types() -> None:
    async with FakeLMNTServer() as server:
        for status, kind in (
            (401, "authentication_error"),
            (429, "rate_limit_error"),
            (503, "internal_server_error"),
        ):
            server.fail_next(status)
            assert (await _first_error(server, GOOD_INIT))["type"] == kind
