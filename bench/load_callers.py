"""bench/load.py's fake Twilio callers in Python: cheap Media Streams (LeanStream), the 20 ms Ticker, the turn loop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from bench.load_common import FRAME_SECS, GREETING_SECS, NUMBER, PUBLIC_HOST, TICK_GROUPS
from patterd.protocols.audio import FRAME_BYTES
from tests.fakes.twilio import FakeTwilio, new_sid


@dataclass
class CallerStats:
    latencies_ms: list[float] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class LeanStream:
    """One caller's Media Stream, cheap per frame: pre-encoded payloads, playback computed from timestamps."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_sid: str) -> None:
        self.ws = ws
        self.stream_sid = stream_sid
        self.loop = asyncio.get_running_loop()
        self.media_times: list[float] = []
        self.closed = False
        self.speech: list[str] = []  # b64 payloads still to say
        self.said: asyncio.Future[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.chunk = 0
        self._play_end = 0.0  # when Twilio's playback buffer runs dry
        self._marks: dict[str, asyncio.TimerHandle] = {}  # marks waiting for playback to pass them
        self._sends: set[asyncio.Future[None]] = set()
        self._prefix = '{"event":"media","streamSid":' + json.dumps(stream_sid) + ',"sequenceNumber":"'

    def frame(self, silence_b64: str) -> str | None:
        """The next 20 ms media message (speech if queued, else silence)."""
        if self.closed:
            return None
        self.chunk += 1
        if self.speech:
            payload = self.speech.pop()
            if not self.speech and self.said is not None and not self.said.done():
                self.said.set_result(None)
        else:
            payload = silence_b64
        n = self.chunk
        return (
            f'{self._prefix}{n + 1}","media":{{"track":"inbound","chunk":"{n}",'
            f'"timestamp":"{(n - 1) * 20}","payload":"{payload}"}}}}'
        )

    async def say(self, payloads: list[str]) -> None:
        self.said = self.loop.create_future()
        self.speech = payloads[::-1]
        await self.said

    def _echo(self, name: str) -> None:
        self._marks.pop(name, None)
        if not self.closed:
            msg = json.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            task = asyncio.ensure_future(self._send(msg))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _send(self, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(text)

    async def read(self) -> None:
        media_prefix = '{"event":"media"'
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = self.loop.time()
            data: str = msg.data
            if data.startswith(media_prefix):
                self.media_times.append(now)
                self._play_end = max(now, self._play_end) + FRAME_SECS
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
                continue
            event = json.loads(data)
            if event.get("event") == "mark":
                name = str(event["mark"]["name"])
                if self._play_end <= now:
                    self._echo(name)
                else:
                    self._marks[name] = self.loop.call_at(self._play_end, self._echo, name)
            elif event.get("event") == "clear":
                self._play_end = now
                for name, timer in list(self._marks.items()):
                    timer.cancel()
                    self._echo(name)  # the marks still pending come back at once on clear
        self.closed = True

    async def stop(self) -> None:
        self.closed = True
        await self._send(json.dumps({"event": "stop", "streamSid": self.stream_sid, "stop": {}}))
        await self.ws.close()


class Ticker:
    """Sends every caller's next frame each 20 ms; callers spread over TICK_GROUPS slots of the tick."""

    def __init__(self, silence_b64: str) -> None:
        self.groups: list[list[LeanStream]] = [[] for _ in range(TICK_GROUPS)]
        self.silence_b64 = silence_b64
        self._n = 0
        self.max_lag_ms = 0.0  # how far the sends fell behind their slot (the fakes' own health)
        self.lags: list[tuple[float, int]] = []
        self.origin = 0.0

    def add(self, stream: LeanStream) -> None:
        self.groups[self._n % TICK_GROUPS].append(stream)
        self._n += 1

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tick = 0
        while loop.time() < until:
            for g, group in enumerate(self.groups):
                delay = t0 + (tick + g / TICK_GROUPS) * FRAME_SECS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif tick > 50:
                    self.max_lag_ms = max(self.max_lag_ms, -delay * 1000)
                    if -delay > 0.02:
                        self.lags.append((round(loop.time() - self.origin, 2), round(-delay * 1000)))
                for stream in group:
                    text = stream.frame(self.silence_b64)
                    if text is not None:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await stream.ws.send_str(text)
            tick += 1


S = TypeVar("S", bound="LeanStream")


async def open_media_stream(
    net: FakeTwilio,
    session: aiohttp.ClientSession,
    index: int,
    make: Callable[[aiohttp.ClientWebSocketResponse, str], S],
    errors: list[str],
) -> S | None:
    """Caller `index`'s signed voice webhook, then its signed media socket with `connected` and `start` sent."""
    call = await net.inbound_call(f"+1555{index:07d}", NUMBER, connect=False)
    if call.twiml is None or not call.twiml.stream_url:
        errors.append(f"caller {index}: not connected (webhook {call.webhook_status})")
        return None
    public = call.twiml.stream_url
    ws = await session.ws_connect(
        net.local_url(public), headers={"X-Twilio-Signature": net.sign(public, None)}
    )
    stream = make(ws, new_sid("MZ"))
    await ws.send_str(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    start = {
        "streamSid": stream.stream_sid,
        "accountSid": net.account_sid,
        "callSid": call.call_sid,
        "tracks": ["inbound"],
        "customParameters": call.twiml.parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    msg = {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream.stream_sid}
    await ws.send_str(json.dumps(msg))
    return stream


async def past_greeting(
    net: FakeTwilio,
    session: aiohttp.ClientSession,
    index: int,
    make: Callable[[aiohttp.ClientWebSocketResponse, str], S],
    ticker: Ticker,
    errors: list[str],
) -> tuple[S, asyncio.Future[None]] | None:
    """Caller `index`'s stream (open_media_stream) read and ticking, once the greeting has played:
    (stream, its reader task); None when it did not connect."""
    stream = await open_media_stream(net, session, index, make, errors)
    if stream is None:
        return None
    reader = asyncio.ensure_future(stream.read())
    ticker.add(stream)
    await asyncio.sleep(GREETING_SECS)
    if not stream.media_times:
        errors.append(f"caller {index}: no greeting")
    return stream, reader


async def caller(
    net: FakeTwilio,
    ws_session: aiohttp.ClientSession,
    ticker: Ticker,
    index: int,
    speech: list[str],
    until: float,
    measure_from: float,
    stats: CallerStats,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        opened = await past_greeting(net, ws_session, index, LeanStream, ticker, stats.errors)
        if opened is None:
            return
        stream, reader = opened
        while loop.time() < until and not stream.closed:
            await stream.say(speech)
            spoke_end = loop.time()
            frames_before = len(stream.media_times)
            stream.waiter = loop.create_future()
            try:
                async with asyncio.timeout(10):
                    await stream.waiter
            except TimeoutError:
                stats.errors.append(f"caller {index}: no answer to a turn")
                continue
            if spoke_end >= measure_from:
                stats.latencies_ms.append((stream.media_times[frames_before] - spoke_end) * 1000)
            await asyncio.sleep(2.2)  # the answer plays (about 2 s), then the caller speaks again
            if spoke_end >= measure_from:
                stats.lateness_ms.extend(lateness(stream.media_times[frames_before:]))
        if stream.closed:
            stats.errors.append(f"caller {index}: the daemon closed the stream")
        await stream.stop()
        reader.cancel()
    except Exception as exc:
        stats.errors.append(f"caller {index}: {type(exc).__name__}: {exc}")


def lateness(times: list[float]) -> list[float]:
    """Per frame: ms behind the real-time schedule that starts at the response's first frame."""
    if not times:
        return []
    t0 = times[0]
    return [max(0.0, (t - (t0 + k * FRAME_SECS)) * 1000) for k, t in enumerate(times)]


async def _worker_main(job: dict[str, Any]) -> dict[str, Any]:
    speech_ulaw: bytes = job["speech"]
    speech = [
        base64.b64encode(speech_ulaw[i : i + FRAME_BYTES]).decode()
        for i in range(0, len(speech_ulaw), FRAME_BYTES)
    ]
    silence = base64.b64encode(b"\xff" * FRAME_BYTES).decode()
    stats = CallerStats()
    loop = asyncio.get_running_loop()
    ticker = Ticker(silence)
    ticker.origin = job["measure_from"]
    until, measure_from = job["until"], job["measure_from"]
    # Media sockets get their own session without aiohttp's default cap of 100 connections.
    async with (
        FakeTwilio(
            job["daemon_url"], PUBLIC_HOST, account_sid=job["account_sid"], auth_token=job["auth_token"]
        ) as net,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as ws_session,
    ):
        tick_task = asyncio.ensure_future(ticker.run(until + 15))
        tasks = []
        for index, at in job["starts"]:
            await asyncio.sleep(max(0.0, at - loop.time()))
            tasks.append(
                asyncio.ensure_future(
                    caller(net, ws_session, ticker, index, speech, until, measure_from, stats)
                )
            )
        await asyncio.gather(*tasks)
        tick_task.cancel()
    return {
        "latencies_ms": stats.latencies_ms,
        "lateness_ms": stats.lateness_ms,
        "errors": stats.errors,
        "tick_lag_ms": ticker.max_lag_ms,
        "lags": ticker.lags[:40],
    }


def _worker(job: dict[str, Any], conn: Any, cores: set[int]) -> None:
    os.sched_setaffinity(0, cores)
    conn.send(asyncio.run(_worker_main(job)))
    conn.close()
