"""The fake Telnyx on its own, driven by a bare aiohttp 'daemon' that speaks the protocol by hand."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from patterd.protocols import telnyx as proto
from tests.fakes.telnyx import Callee, FakeTelnyx


class BareDaemon:
    """Verifies signatures, answers every call with a stream, echoes caller audio back, marks it."""

    def __init__(self, fake: FakeTelnyx) -> None:
        self.fake = fake
        self.events: list[tuple[str, str | None]] = []  # (event_type, refusal reason)
        self.frames: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/telnyx/voice", self.webhook)
        app.router.add_get("/ws/telnyx/stream/{call_id}", self.media)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        reason = proto.verify_signature(
            self.fake.public_key_b64,
            request.headers.get(proto.SIGNATURE_HEADER),
            request.headers.get(proto.TIMESTAMP_HEADER),
            raw,
            time.time(),
        )
        event = proto.parse_webhook(raw)
        self.events.append((event.event_type, reason))
        if reason is not None:
            return web.Response(status=403)
        if isinstance(event, proto.CallInitiated) and event.direction == "incoming":
            asyncio.get_running_loop().create_task(self.answer(event))
        return web.Response()

    async def answer(self, event: proto.CallInitiated) -> None:
        body = proto.answer_command(
            "wss://public.example/ws/telnyx/stream/c1",
            client_state=proto.encode_client_state("c1"),
            command_id=proto.command_id_for(event.event_id, "answer"),
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # the second is a duplicate Telnyx must ignore
                async with session.post(
                    self.fake.base_url + proto.command_path(event.call_control_id, "answer"),
                    json=body,
                    headers={"Authorization": f"Bearer {self.fake.api_key}"},
                ) as resp:
                    assert resp.status == 200

    async def media(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            frame = json.loads(msg.data)
            self.frames.append(frame)
            if frame["event"] == "media" and len([f for f in self.frames if f["event"] == "media"]) <= 5:
                await ws.send_str(
                    json.dumps({"event": "media", "media": {"payload": frame["media"]["payload"]}})
                )
                await ws.send_str(proto.encode_mark(f"m{frame['media']['chunk']}"))
        return ws


@pytest.fixture
async def pair() -> AsyncIterator[tuple[FakeTelnyx, BareDaemon]]:
    fake = FakeTelnyx()
    await fake.start()
    daemon = BareDaemon(fake)
    await daemon.start()
    fake.webhook_base = daemon.base
    try:
        yield fake, daemon
    finally:
        await fake.close()  # first: the daemon's websocket handlers end when the fake hangs up
        assert daemon.runner is not None
        await daemon.runner.cleanup()


async def test_inbound_call_follows_answer_streams_and_plays_back(
    pair: tuple[FakeTelnyx, BareDaemon],
) -> None:
    fake, daemon = pair
    caller_audio = bytes(range(256)) * 4  # 1024 bytes → 7 frames, the last padded with silence
    call = await fake.place_call("+15550001111", "+15550001234", audio=caller_audio)
    await asyncio.wait_for(call.stream_open.wait(), 5)
    answers = fake.commands_for("answer", include_duplicates=True)
    assert [a.duplicate for a in answers] == [False, True]
    assert call.client_state == proto.encode_client_state("c1")
    await fake.wait_webhook("streaming.started")
    assert [e for e, _ in daemon.events][:3] == ["call.initiated", "call.answered", "streaming.started"]
    assert all(reason is None for _, reason in daemon.events)

    assert await call.wait_marks(5) == ["m1", "m2", "m3", "m4", "m5"]
    assert bytes(call.heard[:800]) == caller_audio[:800]  # echoed audio, played in order

    start = next(f for f in daemon.frames if f["event"] == "start")
    assert start["start"]["media_format"] == {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
    assert start["start"]["call_control_id"] == call.call_control_id
    assert daemon.frames[0]["event"] == "connected"
    media = [f for f in daemon.frames if f["event"] == "media"]
    assert [f["media"]["chunk"] for f in media[:3]] == ["1", "2", "3"]
    sent = b"".join(base64.b64decode(f["media"]["payload"]) for f in media)
    assert len(sent) >= 800 and sent[:1024] == caller_audio[: len(sent)]

    call.say(b"\x01" * 200)  # padded to two frames
    await call.wait_sent()
    assert len(call.speech_started) == 2 and call.violations == []
    await call.press("9")
    await call.hangup("normal_clearing")
    assert any(f["event"] == "dtmf" and f["dtmf"]["digit"] == "9" for f in daemon.frames)
    assert daemon.frames[-1]["event"] == "stop"
    hangup = await fake.wait_webhook("call.hangup")
    assert json.loads(hangup.body)["data"]["payload"]["hangup_cause"] == "normal_clearing"


async def test_stale_webhook_is_signed_with_the_given_timestamp(pair: tuple[FakeTelnyx, BareDaemon]) -> None:
    fake, daemon = pair
    call = await fake.place_call("+15550001111", "+15550001234")
    stale = await fake.resend(fake.webhooks[0], timestamp=int(time.time()) - 600)
    assert stale.status == 403
    assert daemon.events[-1] == ("call.initiated", "stale_timestamp")
    assert stale.event_id == fake.webhooks[0].event_id
    await call.hangup()


async def test_rest_auth_errors_dial_and_dedupe(pair: tuple[FakeTelnyx, BareDaemon]) -> None:
    fake, daemon = pair
    fake.callee("+15557654321", Callee(answer="machine"))
    body = proto.dial_command(
        connection_id=fake.connection_id,
        to="+15557654321",
        from_="+15550001234",
        webhook_url="https://public.example/webhooks/telnyx/voice",
        client_state=proto.encode_client_state("o1"),
        command_id="dial-1",
        answering_machine_detection="greeting_end",
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(fake.base_url + "/v2/calls", json=body) as resp:
            assert resp.status == 401
            assert (await resp.json())["errors"][0]["code"] == "10009"
        auth = {"Authorization": f"Bearer {fake.api_key}"}
        async with session.post(fake.base_url + "/v2/calls", json=body, headers=auth) as resp:
            data = (await resp.json())["data"]
        async with session.post(fake.base_url + "/v2/calls", json=body, headers=auth) as resp:
            again = (await resp.json())["data"]
        assert data["call_control_id"] == again["call_control_id"] and data["record_type"] == "call"
        await fake.wait_webhook("call.machine.greeting.ended")
        types = [e for e, _ in daemon.events]
        assert types == [
            "call.initiated",
            "call.answered",
            "call.machine.detection.ended",
            "call.machine.greeting.ended",
        ]
        fake.fail("hangup", 503)
        url = fake.base_url + proto.command_path(data["call_control_id"], "hangup")
        async with session.post(url, json={"command_id": "h1"}, headers=auth) as resp:
            assert resp.status == 503
        async with session.post(url, json={"command_id": "h1"}, headers=auth) as resp:
            assert resp.status == 200
        await fake.wait_webhook("call.hangup")
        async with session.post(url, json={"command_id": "h2"}, headers=auth) as resp:
            assert resp.status == 422 and (await resp.json())["errors"][0]["code"] == "90018"
    assert [c.duplicate for c in fake.commands_for("dial", include_duplicates=True)] == [False, True]
