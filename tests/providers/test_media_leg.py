"""The one media leg over a real loopback websocket: a codec without marks (emulated), framing, bad frames, clear."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from patterd.protocols.events import CallerAudio, CallerDtmf, MarkPlayed, MediaEvent, StreamStopped
from patterd.protocols.frames import BadFrame
from patterd.protocols.media_codec import Notice
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from tests.serving import serve_app


class PlainCodec:
    """A toy wire: JSON `{"audio": hex}` / `{"dtmf": d}` / `{"warn": text}` / `{"stop": 1}`; no marks, no clear."""

    def receive(self, frame: str | bytes) -> Sequence[MediaEvent | Notice]:
        try:
            msg = json.loads(frame)
        except ValueError:
            raise BadFrame("not JSON", "not_json") from None
        if "audio" in msg:
            return [CallerAudio(bytes.fromhex(msg["audio"]))]
        if "dtmf" in msg:
            return [CallerDtmf(msg["dtmf"])]
        if "warn" in msg:
            return [Notice("peer warned", {"text": msg["warn"]})]
        if "stop" in msg:
            return [StreamStopped("peer stopped")]
        if "boom" in msg:
            raise RuntimeError("decoder bug")
        raise BadFrame("unknown", "unknown_event")

    def media(self, ulaw: bytes) -> bytes:
        return ulaw  # binary frames

    def mark(self, name: str) -> None:
        return None

    def clear(self) -> None:
        return None


@dataclass
class Router:
    """The CallRouter bits MediaSocket uses, plus what the test needs to see."""

    bad: list[str] = field(default_factory=list)

    def count_bad_frame(self, carrier: str, reason: str) -> None:
        self.bad.append(reason)


@dataclass
class Rig:
    url: str
    router: Router
    legs: asyncio.Queue[MediaLeg]
    events: list[MediaEvent]
    done: asyncio.Event


@asynccontextmanager
async def rig(frame_bytes: int = 160) -> AsyncIterator[Rig]:
    router = Router()
    legs: asyncio.Queue[MediaLeg] = asyncio.Queue()
    events: list[MediaEvent] = []
    done = asyncio.Event()

    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        frames = MediaSocket(websocket, "plain", router)  # type: ignore[arg-type]
        leg = MediaLeg(websocket, PlainCodec(), frames, frame_bytes=frame_bytes, emulate_marks=True)
        await legs.put(leg)
        try:
            async for event in leg.events():
                events.append(event)
        finally:
            await leg.close()
            done.set()

    app = Starlette(routes=[WebSocketRoute("/media", media)])
    async with serve_app(app) as base:
        yield Rig(base.replace("http", "ws") + "/media", router, legs, events, done)


async def until(predicate: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_marks_are_emulated_at_real_time_play_out() -> None:
    async with rig() as r, aiohttp.ClientSession() as http, http.ws_connect(r.url) as ws:
        leg = await r.legs.get()
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await leg.send_audio(b"\x01" * 800)  # 100 ms at 8 kHz
        await leg.send_mark("first")
        await leg.send_audio(b"\x02" * 900)  # 100 ms more, plus 12.5 ms that the mark flushes
        await leg.send_mark("second")
        await until(lambda: len([e for e in r.events if isinstance(e, MarkPlayed)]) == 2)
        elapsed = loop.time() - sent
        marks = [e.name for e in r.events if isinstance(e, MarkPlayed)]
        assert marks == ["first", "second"]
        assert elapsed >= 0.2  # not before 212.5 ms of audio could have played
        received = b""
        while len(received) < 1700:
            message = await ws.receive_bytes(timeout=2)
            assert len(message) <= 160  # 20 ms frames; the flushed remainder is shorter
            received += message
        assert received == b"\x01" * 800 + b"\x02" * 900


async def test_clear_fires_pending_emulated_marks_at_once() -> None:
    async with rig() as r, aiohttp.ClientSession() as http, http.ws_connect(r.url):
        leg = await r.legs.get()
        await leg.send_audio(b"\x01" * 80_000)  # 10 s queued
        await leg.send_mark("late")
        await asyncio.sleep(0.05)
        assert not any(isinstance(e, MarkPlayed) for e in r.events)
        loop = asyncio.get_running_loop()
        cleared = loop.time()
        await leg.clear()
        await until(lambda: any(isinstance(e, MarkPlayed) for e in r.events))
        assert loop.time() - cleared < 1.0
        await leg.send_audio(b"\x01" * 160)  # play-out restarts from now, not after the cleared 10 s
        await leg.send_mark("next")
        await until(lambda: [e.name for e in r.events if isinstance(e, MarkPlayed)] == ["late", "next"])


async def test_bad_frames_and_decoder_bugs_cost_one_frame_and_the_stop_ends_the_stream() -> None:
    async with rig() as r, aiohttp.ClientSession() as http, http.ws_connect(r.url) as ws:
        await r.legs.get()
        await ws.send_str("not json")
        await ws.send_str(json.dumps({"boom": 1}))
        await ws.send_str(json.dumps({"what": 1}))
        await ws.send_str(json.dumps({"warn": "you sent junk"}))
        await ws.send_str(json.dumps({"audio": "ff00"}))
        await ws.send_str(json.dumps({"dtmf": "5"}))
        await ws.send_str(json.dumps({"stop": 1}))
        await asyncio.wait_for(r.done.wait(), 5)
        assert r.router.bad == ["not_json", "decoder_error", "unknown_event"]
        assert r.events == [CallerAudio(b"\xff\x00"), CallerDtmf("5"), StreamStopped("peer stopped")]


async def test_a_closed_socket_ends_with_stream_stopped_while_a_mark_is_pending() -> None:
    async with rig(frame_bytes=0) as r:
        async with aiohttp.ClientSession() as http, http.ws_connect(r.url) as ws:
            leg = await r.legs.get()
            await leg.send_audio(b"\x01" * 8000)  # 1 s, sent as one message (frame_bytes=0)
            assert len(await ws.receive_bytes(timeout=2)) == 8000
            await leg.send_mark("never")
        await asyncio.wait_for(r.done.wait(), 5)
        assert isinstance(r.events[-1], StreamStopped)
        await leg.send_audio(b"\x01" * 160)  # after the peer left: a no-op, not an error
