"""The fake Speechmatics server speaks the documented protocol: the official `speechmatics-rt` SDK runs against it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from speechmatics.rt import (
    AsyncClient,
    AudioEncoding,
    AudioFormat,
    ConversationConfig,
    ServerMessageType,
    TranscriptionConfig,
    TranscriptionError,
    TranscriptResult,
)
from speechmatics.rt import ConnectionError as SMConnectionError

from tests.fakes.deepgram import frames, silence, tone_ulaw
from tests.fakes.speechmatics import FakeSpeechmaticsServer, Fault

KEY = "sm-test-key"
CONFIG = TranscriptionConfig(
    language="en",
    enable_partials=True,
    max_delay=1.0,
    conversation_config=ConversationConfig(end_of_utterance_silence_trigger=0.5),
)
MULAW = AudioFormat(encoding=AudioEncoding.MULAW, sample_rate=8000)


async def test_official_sdk_streams_partials_finals_end_of_utterance_and_ends() -> None:
    async with FakeSpeechmaticsServer() as server:
        server.say("Hello there.", "Book a table")
        seen: list[dict[str, Any]] = []
        client = AsyncClient(api_key=KEY, url=server.url)
        for kind in (
            ServerMessageType.ADD_PARTIAL_TRANSCRIPT,
            ServerMessageType.ADD_TRANSCRIPT,
            ServerMessageType.END_OF_UTTERANCE,
            ServerMessageType.END_OF_TRANSCRIPT,
        ):
            client.on(kind, seen.append)
        await client.start_session(transcription_config=CONFIG, audio_format=MULAW)
        for frame in frames(tone_ulaw(600) + silence(600) + tone_ulaw(400)):
            await client.send_audio(frame)
        await client.force_end_of_utterance()
        await client.stop_session()
    kinds = [m["message"] for m in seen]
    assert kinds[0] == "AddPartialTranscript" and kinds[-1] == "EndOfTranscript"
    finals = [
        TranscriptResult.from_message(m).metadata.transcript for m in seen if m["message"] == "AddTranscript"
    ]
    assert finals == ["Hello there. ", "Book a table "]
    assert kinds.count("EndOfUtterance") == 2  # one from silence, one forced
    session = server.sessions[0]
    assert session.headers["Authorization"] == f"Bearer {KEY}" and session.query["sm-sdk"].startswith(
        "python-rt"
    )
    assert session.start is not None and session.start["audio_format"] == {
        "type": "raw",
        "encoding": "mulaw",
        "sample_rate": 8000,
    }
    assert session.names() == ["ForceEndOfUtterance", "EndOfStream"]
    assert session.controls[0]["timestamp"] == pytest.approx(1.6)  # the SDK's marker: seconds of audio sent
    assert session.controls[1]["last_seq_no"] == session.frames == 80 and session.close_code == 1000


async def test_official_sdk_wrong_key_is_refused_at_the_handshake() -> None:
    async with FakeSpeechmaticsServer() as server:
        client = AsyncClient(api_key="wrong", url=server.url)
        with pytest.raises(SMConnectionError, match="401"):
            await client.start_session(transcription_config=CONFIG, audio_format=MULAW)
        await client.close()
    assert server.refused == [401] and not server.sessions


async def test_official_sdk_sees_an_in_band_error_instead_of_recognition_started() -> None:
    async with FakeSpeechmaticsServer() as server:
        server.fail(Fault(error_type="quota_exceeded"))
        client = AsyncClient(api_key=KEY, url=server.url)
        with pytest.raises(TranscriptionError, match="quota_exceeded"):
            await client.start_session(transcription_config=CONFIG, audio_format=MULAW)
        await client.close()
    assert server.errors == ["quota_exceeded"] and server.sessions[0].close_code == 4005


async def raw(server: FakeSpeechmaticsServer, first: str | bytes) -> list[Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url, headers={"Authorization": f"Bearer {KEY}"}) as ws,
    ):
        if isinstance(first, bytes):
            await ws.send_bytes(first)
        else:
            await ws.send_str(first)
        out = [json.loads(m.data) async for m in ws]
        return [*out, ws.close_code]


START = {
    "message": "StartRecognition",
    "audio_format": {"type": "raw", "encoding": "mulaw", "sample_rate": 8000},
    "transcription_config": {"language": "en", "max_delay": 1.0},
}


@pytest.mark.parametrize(
    ("first", "kind", "needle"),
    [
        (b"\xff" * 160, "protocol_error", "before StartRecognition"),
        (json.dumps({"message": "EndOfStream"}), "invalid_message", "StartRecognition"),
        (
            json.dumps(START | {"audio_format": {"type": "raw", "encoding": "mulaw"}}),
            "invalid_config",
            "sample_rate",
        ),
        (
            json.dumps(START | {"transcription_config": {"language": "en", "max_delay": 0.1}}),
            "invalid_config",
            "max_delay",
        ),
        (json.dumps(START | {"transcription_config": {"max_delay": 1}}), "invalid_config", "language"),
    ],
)
async def test_start_rules(first: str | bytes, kind: str, needle: str) -> None:
    async with FakeSpeechmaticsServer() as server:
        *messages, code = await raw(server, first)
    assert (
        messages[0]["message"] == "Error" and messages[0]["type"] == kind and needle in messages[0]["reason"]
    )
    assert code == 1003  # the fake closes misuse with 1003 (unsupported data); the Error message says why


async def test_idle_session_gets_idle_timeout_and_jobs_probe() -> None:
    async with FakeSpeechmaticsServer(idle_timeout_secs=0.2) as server:
        *messages, code = await raw(server, json.dumps(START))
        assert [m["message"] for m in messages] == ["RecognitionStarted", "Error"]
        assert messages[1]["type"] == "idle_timeout" and code == 1008
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"http://127.0.0.1:{server.port}/v2/jobs", headers={"Authorization": f"Bearer {KEY}"}
            ) as ok:
                assert ok.status == 200 and (await ok.json()) == {"jobs": []}
            async with http.get(f"http://127.0.0.1:{server.port}/v2/jobs") as refused:
                assert refused.status == 401
        assert server.probes == 1
