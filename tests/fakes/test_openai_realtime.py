"""The fake Realtime server behaves like the GA endpoint: auth, schema errors, VAD, scripted replies."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from patterd.protocols import openai_realtime as rt
from tests.fakes.openai_realtime import CallTool, FakeRealtimeServer, Reply, Say, tone_pcm24


async def next_of(ws: ClientConnection, etype: str) -> dict[str, Any]:
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == etype:
            return dict(event)


async def test_auth_and_beta_header_are_refused() -> None:
    async with FakeRealtimeServer() as fake:
        with pytest.raises(InvalidStatus) as bad_key:
            await connect(fake.url, additional_headers={"Authorization": "Bearer nope"})
        assert bad_key.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as beta:
            await connect(
                fake.url, additional_headers={"Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v1"}
            )
        assert beta.value.response.status_code == 400
        assert fake.connections == 0


async def test_invalid_client_events_get_error_events() -> None:
    async with (
        FakeRealtimeServer() as fake,
        connect(fake.url, additional_headers={"Authorization": "Bearer sk-test"}) as ws,
    ):
        await next_of(ws, "session.created")
        await ws.send(
            json.dumps({"type": "session.update", "session": {"type": "realtime", "temperature": 0.7}})
        )
        err = await next_of(ws, "error")
        assert err["error"]["type"] == "invalid_request_error" and err["error"]["code"] == "invalid_value"
        await ws.send(json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}))
        await next_of(ws, "error")
        await ws.send('{"type": "response.audio.delta"}')
        assert (await next_of(ws, "error"))["error"]["code"] == "invalid_event_type"
        await ws.send(rt.response_cancel())
        assert (await next_of(ws, "error"))["error"]["code"] == "response_cancel_not_active"
        assert len(fake.errors) == 4


async def test_vad_transcript_reply_and_tool_call() -> None:
    replies: list[Reply] = [Say("Hello there."), CallTool("lookup", {"id": 1}), Say("Done.")]
    fake = FakeRealtimeServer(replies=replies, transcripts=["hi"], pace=50)
    async with fake, connect(fake.url, additional_headers={"Authorization": "Bearer sk-test"}) as ws:
        await next_of(ws, "session.created")
        await ws.send(rt.session_update(instructions="x", voice="alloy"))
        await next_of(ws, "session.updated")
        audio = b"\x00\x00" * 24 * 1000 + tone_pcm24(600) + b"\x00\x00" * 24 * 800
        for i in range(0, len(audio), 960):
            await ws.send(rt.input_audio_append(audio[i : i + 960]))
        started = await next_of(ws, "input_audio_buffer.speech_started")
        assert 600 <= started["audio_start_ms"] <= 1000  # includes the 300 ms prefix padding
        stopped = await next_of(ws, "input_audio_buffer.speech_stopped")
        assert 1550 <= stopped["audio_end_ms"] <= 1700
        assert (await next_of(ws, "conversation.item.input_audio_transcription.completed"))[
            "transcript"
        ] == "hi"
        delta = await next_of(ws, "response.output_audio.delta")
        assert len(base64.b64decode(delta["delta"])) > 0
        assert (await next_of(ws, "response.output_audio_transcript.done"))["transcript"] == "Hello there."
        done = await next_of(ws, "response.done")
        assert done["response"]["status"] == "completed" and done["response"]["usage"]["output_tokens"] == 80
        await ws.send(rt.response_create())
        call = await next_of(ws, "response.function_call_arguments.done")
        assert call["name"] == "lookup" and json.loads(call["arguments"]) == {"id": 1}
        await next_of(ws, "response.done")
        await ws.send(rt.function_call_output(call["call_id"], "ok"))
        await ws.send(rt.response_create())
        assert (await next_of(ws, "response.output_audio_transcript.done"))["transcript"] == "Done."
    assert fake.tool_outputs[0]["output"] == "ok" and fake.errors == []


async def test_cancel_and_truncate() -> None:
    async with (
        FakeRealtimeServer(replies=[Say("This is a rather long answer to cut short.")], pace=2) as fake,
        connect(fake.url, additional_headers={"Authorization": "Bearer sk-test"}) as ws,
    ):
        await next_of(ws, "session.created")
        await ws.send(rt.response_create())
        delta = await next_of(ws, "response.output_audio.delta")
        await ws.send(rt.response_cancel())
        done = await next_of(ws, "response.done")
        assert done["response"]["status"] == "cancelled"
        await ws.send(rt.truncate(delta["item_id"], 0, 50))
        assert (await next_of(ws, "conversation.item.truncated"))["audio_end_ms"] == 50
        await ws.send(rt.truncate(delta["item_id"], 0, 60_000))
        assert (await next_of(ws, "error"))["error"]["param"] == "audio_end_ms"
    assert fake.truncates[0]["audio_end_ms"] == 50 and fake.cancels == 1
