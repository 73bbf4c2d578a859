"""The softphone callers of bench/api_bench.py: real calls over the local media protocol, in their own process.

Each caller posts the local carrier's voice webhook, then streams 20 ms μ-law frames in real time
(espeak-ng phrases the agent answers, then silence), echoes marks once the agent's audio would have
played, and counts what it saw (`CallerStats`), including frames sent late.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from patterd.protocols.audio import FRAME_BYTES, silence_ulaw

FRAME_SECS = 0.02
PAUSE_SECS = 3.5  # silence after each phrase: the agent's reply plays meanwhile


@dataclass
class CallerStats:
    """What the callers saw, so the report can show the calls were real."""

    calls_started: int = 0
    frames_sent: int = 0
    agent_audio_secs: float = 0.0
    transcript_lines: int = 0
    marks_echoed: int = 0
    late_frames: int = 0  # frames sent > 20 ms behind schedule
    errors: list[str] = field(default_factory=list)


async def one_caller(
    index: int,
    base_url: str,
    session: aiohttp.ClientSession,
    speech: Sequence[bytes],
    stats: CallerStats,
    connected: Callable[[], None],
    stop: asyncio.Event,
) -> None:
    """One softphone: a call that talks until `stop`; a call the agent ends is replaced by a new one."""
    first = True
    while not stop.is_set():
        async with session.post(base_url + "/webhooks/local/voice", json={}) as resp:
            body = await resp.json()
            if resp.status != 201:
                stats.errors.append(f"caller {index}: webhook answered {resp.status}: {body}")
                return
        stats.calls_started += 1
        ws = await session.ws_connect(base_url.replace("http", "ws", 1) + body["media_path"])
        await ws.send_str(json.dumps({"event": "start", "start": {"format": "mulaw/8000"}}))
        if first:
            connected()
            first = False
        try:
            await talk(ws, index, speech, stats, stop)
        except (aiohttp.ClientError, ConnectionError) as exc:
            stats.errors.append(f"caller {index}: {exc!r}")
        finally:
            await ws.close()


async def talk(
    ws: aiohttp.ClientWebSocketResponse,
    index: int,
    speech: Sequence[bytes],
    stats: CallerStats,
    stop: asyncio.Event,
) -> None:
    """Send 20 ms frames in real time (phrases, then silence) until `stop` or the daemon ends the call."""
    playout_end = time.monotonic()  # when the agent audio received so far has finished playing
    pending_marks: list[tuple[float, str]] = []

    async def receive() -> None:
        nonlocal playout_end
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            event = data.get("event")
            if event == "media":
                secs = len(base64.b64decode(data["media"]["payload"])) / 8000
                stats.agent_audio_secs += secs
                playout_end = max(playout_end, time.monotonic()) + secs
            elif event == "mark":
                pending_marks.append((playout_end, data["mark"]["name"]))
            elif event == "clear":
                playout_end = time.monotonic()
                pending_marks.clear()
            elif event == "transcript":
                stats.transcript_lines += 1

    receiver = asyncio.create_task(receive())
    silence = silence_ulaw(20)
    # Callers start staggered so their frames do not all land on the same millisecond.
    script = [silence] * (50 + 7 * index)
    turn = index
    next_at = time.monotonic()
    try:
        while not stop.is_set() and not receiver.done():
            if not script:
                audio = speech[turn % len(speech)]
                turn += 1
                script = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
                script[-1] = script[-1].ljust(FRAME_BYTES, b"\xff")
                script += [silence] * int(PAUSE_SECS / FRAME_SECS)
            payload = base64.b64encode(script.pop(0)).decode()
            await ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
            stats.frames_sent += 1
            now = time.monotonic()
            while pending_marks and pending_marks[0][0] <= now:
                name = pending_marks.pop(0)[1]
                await ws.send_str(json.dumps({"event": "mark", "mark": {"name": name}}))
                stats.marks_echoed += 1
            next_at += FRAME_SECS
            if now - next_at > FRAME_SECS:
                stats.late_frames += 1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if not ws.closed:
            await ws.send_str(json.dumps({"event": "stop"}))
    finally:
        receiver.cancel()


def run_callers(base_url: str, calls: int, speech: Sequence[bytes], ready: Any, stop: Any, out: Any) -> None:
    """Process body: `calls` softphone callers until `stop` (a multiprocessing Event) is set."""

    async def main() -> None:
        stats = CallerStats()
        up = 0
        stopping = asyncio.Event()

        def connected() -> None:
            nonlocal up
            up += 1
            if up == calls:
                ready.set()

        async def watch_stop() -> None:
            await asyncio.to_thread(stop.wait)
            stopping.set()

        async with aiohttp.ClientSession() as session:
            watcher = asyncio.create_task(watch_stop())
            results = await asyncio.gather(
                *(one_caller(i, base_url, session, speech, stats, connected, stopping) for i in range(calls)),
                return_exceptions=True,
            )
            watcher.cancel()
        stats.errors += [repr(r) for r in results if isinstance(r, BaseException)]
        out.put(stats.__dict__)

    asyncio.run(main())
