"""`recording: local` end to end on Twilio, Telnyx and the softphone: the file matches what the caller sent and heard.

Each call: the agent's greeting plays for a second, then the caller sends a 1 kHz tone burst over it (a
barge-in: the carrier is told to clear), then hangs up. The recording's left channel must hold the tone
byte for byte; its right channel the greeting byte for byte as far as the caller heard it (within 20 ms
of the clear) and silence where the cleared rest would have played; and the distance between them must match, within 20 ms, the distance on the caller's side
between the start of the tone (a frame sent at s holds the sound of the 20 ms before s) and hearing
the chosen greeting sample (played at 8 kHz from its arrival, after what was queued before it, as the
fakes' players do).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import aiohttp
import numpy as np
import pytest

from patterd.protocols.audio import pcm16_to_ulaw, ulaw_to_pcm16
from patterd.store.recording_file import read_recording
from tests.daemon_process import run_daemon
from tests.e2e.scenarios import (
    Carrier,
    TelnyxHandle,
    TwilioHandle,
    daemon_config,
    engine_server,
    make_carrier,
    wait_for,
    wait_record,
)
from tests.fakes.openai_realtime import Say

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="function")]

GREETING = (  # long enough to still be playing when the caller barges in a second into it
    "Thanks for calling Acme! Our opening hours are nine to five on weekdays, and ten to two on Saturdays."
)
TOLERANCE_SECS = 0.020


def tone_ulaw(ms: int = 300, freq: float = 1000.0) -> bytes:
    n = 8 * ms
    pcm = (np.sin(2 * math.pi * freq * np.arange(n) / 8000) * 12000).astype("<i2").tobytes()
    return pcm16_to_ulaw(pcm)


TONE = tone_ulaw()


@dataclass
class Side:
    """The caller's side of one call: agent audio as received (arrival, bytes), and when the tone went out."""

    received: list[tuple[float, bytes]] = field(default_factory=list)
    tone_sent_at: float = 0.0
    heard: int = 0  # bytes of agent audio the caller heard before the barge-in's clear

    def audio(self) -> bytes:
        return b"".join(chunk for _, chunk in self.received)

    def played_at(self, index: int) -> float:
        """When the caller heard agent byte `index`: played at 8 kHz from arrival, after what came before."""
        end, offset = -math.inf, 0
        for arrival, chunk in self.received:
            start = max(arrival, end)
            if offset + len(chunk) > index:
                return start + (index - offset) / 8000
            offset += len(chunk)
            end = start + len(chunk) / 8000
        raise IndexError(index)


class Softphone:
    """A minimal browser softphone: 20 ms frames out in real time, agent audio played (marks echoed) at 8 kHz."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, side: Side) -> None:
        self.ws = ws
        self.side = side
        self.outgoing = bytearray()
        self.tone_queued = False
        self.loop = asyncio.get_running_loop()
        self.play_end = 0.0
        self.cleared = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        for coro in (self._send(), self._read()):
            task = asyncio.create_task(coro)
            self.tasks.add(task)

    async def _send(self) -> None:
        t0, tick = self.loop.time(), 0
        while not self.ws.closed:
            if self.outgoing:
                frame = bytes(self.outgoing[:160])
                del self.outgoing[:160]
                if self.tone_queued:
                    self.tone_queued = False
                    self.side.tone_sent_at = self.loop.time()
            else:
                frame = b"\xff" * 160
            payload = base64.b64encode(frame).decode()
            await self.ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
            tick += 1
            await asyncio.sleep(max(0.0, t0 + tick * 0.02 - self.loop.time()))  # pacing real time

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            now = self.loop.time()
            if data["event"] == "media":
                chunk = base64.b64decode(data["media"]["payload"])
                self.side.received.append((now, chunk))
                self.play_end = max(self.play_end, now) + len(chunk) / 8000
            elif data["event"] == "clear":  # drop what is not played yet; what was is what was heard
                unplayed = max(0.0, self.play_end - now) * 8000
                self.side.heard = round(len(self.side.audio()) - unplayed)
                self.play_end = now
                self.cleared.set()
            elif data["event"] == "mark":
                task = asyncio.create_task(self._echo(data["mark"]["name"], self.play_end - now))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _echo(self, name: str, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))  # pacing: echoed once the audio before it has played
        if not self.ws.closed:
            await self.ws.send_str(json.dumps({"event": "mark", "mark": {"name": name}}))

    def say(self, ulaw: bytes) -> None:
        self.tone_queued = True
        self.outgoing += ulaw


class LocalCarrier:
    name = "local"

    def config(self) -> str:
        return "carrier: {type: local}\n"


def recording_config(carrier_config: str, engine_url: str, records: Path) -> str:
    text = daemon_config(
        cast(Carrier, _Fixed(carrier_config)), engine_url, "http://127.0.0.1:9/unused", records
    )
    return text.replace("    first_message:", "    recording: local\n    first_message:")


@dataclass
class _Fixed:
    text: str

    def config(self) -> str:
        return self.text


@pytest.fixture
async def engine() -> AsyncIterator[object]:
    async with engine_server() as fake:
        fake.replies[:] = [Say(GREETING)]
        yield fake


async def run_carrier_call(name: str, tmp_path: Path, engine: object) -> tuple[Path, Side]:
    carrier = make_carrier(name)
    await carrier.start()
    records = tmp_path / "records"
    config = tmp_path / "patter.yaml"
    config.write_text(recording_config(carrier.config(), engine.url, records))  # type: ignore[attr-defined]
    cm = run_daemon(config)
    daemon = await asyncio.to_thread(cm.__enter__)
    try:
        await carrier.attach(daemon.base_url)
        handle = await carrier.inbound_call()
        side = Side()
        await handle.wait_heard(8000, timeout=15)  # a second of the greeting played
        await handle.say(TONE)  # the caller speaks over the rest: a barge-in
        side.tone_sent_at = handle.speech_started()[-1]
        cleared_at = await handle.wait_for_clear(timeout=10)
        if isinstance(handle, TwilioHandle):
            fake = handle.call
            payloads = [
                base64.b64decode(m["media"]["payload"]) for _, m in fake.received if m.get("event") == "media"
            ]
            side.heard = len(fake.played)
        else:
            assert isinstance(handle, TelnyxHandle)
            tcall = handle.call
            payloads = [
                base64.b64decode(f["media"]["payload"])
                for f in tcall.frames_from_daemon
                if f.get("event") == "media"
            ]
            side.heard = len(tcall.heard)
        arrivals = handle.media_times()
        side.received = [(t, p) for t, p in zip(arrivals, payloads, strict=True) if t <= cleared_at]
        await handle.hangup_from_far_end()
        directory = await wait_record(records, handle.call_id, "completed", timeout=15)
        return directory, side
    finally:
        await carrier.detach()
        await asyncio.to_thread(cm.__exit__, None, None, None)
        await carrier.close()


async def run_softphone_call(tmp_path: Path, engine: object) -> tuple[Path, Side]:
    """A softphone call that ends with the daemon SIGKILLed mid-call, once the tone is on disk.

    So the file checked is what a kill leaves: no drain, no close, no final flush.
    """
    records = tmp_path / "records"
    config = tmp_path / "patter.yaml"
    config.write_text(recording_config(LocalCarrier().config(), engine.url, records))  # type: ignore[attr-defined]
    with run_daemon(config) as daemon:
        async with aiohttp.ClientSession() as session:
            async with session.post(daemon.base_url + "/webhooks/local/voice", json={}) as resp:
                assert resp.status == 201
                body = await resp.json()
            ws = await session.ws_connect(daemon.base_url.replace("http", "ws") + body["media_path"])
            await ws.send_str(json.dumps({"event": "start"}))
            side = Side()
            phone = Softphone(ws, side)
            phone.start()
            loop = asyncio.get_running_loop()
            await wait_for(lambda: len(side.audio()) > 8000, 15, "greeting audio")
            first = side.received[0][0]
            await wait_for(lambda: loop.time() > first + 1.0, 15, "a second of the greeting played")
            phone.say(TONE + b"\xff" * 8000)  # the caller speaks over the rest (a barge-in), then waits
            async with asyncio.timeout(10):
                await phone.cleared.wait()
            path = await _recording_path(records, body["call_id"])

            def tone_written() -> bool:
                try:
                    return TONE in read_recording(path)[0]
                except ValueError:  # not a valid file yet would fail the test below anyway
                    return False

            await wait_for(tone_written, 15, "the tone in the file")
            daemon.proc.kill()  # SIGKILL mid-call
            await asyncio.to_thread(daemon.proc.wait, 10)
            for task in phone.tasks:
                task.cancel()
            await ws.close()
    # What the kill left plays: sox reads it and decodes every sample frame its header claims.
    info = await asyncio.to_thread(
        subprocess.run, ["soxi", str(path)], capture_output=True, text=True, timeout=30, check=True
    )
    assert "Channels       : 2" in info.stdout and "u-law" in info.stdout and "8000" in info.stdout
    decoded = await asyncio.to_thread(
        subprocess.run,
        ["sox", str(path), "-t", "raw", "-e", "signed", "-b", "16", "-"],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert len(decoded.stdout) == 2 * 2 * len(read_recording(path)[0])
    return path.parent, side


@pytest.mark.parametrize("carrier", ["twilio", "telnyx", "local"])  # local: the SIGKILL case too
async def test_recording_matches_what_the_caller_sent_and_heard(
    carrier: str, tmp_path: Path, engine: object
) -> None:
    if carrier == "local":
        directory, side = await run_softphone_call(tmp_path, engine)
    else:
        directory, side = await run_carrier_call(carrier, tmp_path, engine)
    left, right = read_recording(directory / "recording.wav")
    assert len(left) == len(right)

    # Left: the tone, byte for byte.
    tone_at = left.find(TONE)
    assert tone_at >= 0, "the caller's tone is not in the left channel"

    # Right: the greeting, byte for byte, anchored at its first loud 200 ms.
    heard = side.audio()
    loud = next(i for i in range(0, len(heard) - 1600, 160) if _loudest(heard[i : i + 160]) > 2000)
    anchor = right.find(heard[loud : loud + 1600])
    assert anchor >= 0, "the greeting is not in the right channel"
    start = anchor - loud
    assert start >= 0 and loud < side.heard
    # What was heard is there; where the clear cut it, the rest (never played) is not.
    same = _common_prefix(right[start:], heard)
    print(f"\n[{carrier}] agent audio in the file up to the cut: {same} bytes; the caller heard {side.heard}")
    assert abs(same - side.heard) <= 8000 * TOLERANCE_SECS
    assert len(heard) - same >= 8000  # over a second of the greeting was queued but never played ...
    assert set(right[start + same + 8 : start + same + 8000]) == {0xFF}  # ... and is not in the file

    # Time: the agent sample and the tone are as far apart in the file as the caller experienced them.
    in_file = (tone_at - anchor) / 8000
    # A frame sent at s holds the 20 ms of sound before s (it is sent once captured), so the tone began
    # a frame before its first frame went out.
    experienced = (side.tone_sent_at - 0.020) - side.played_at(loud)
    print(
        f"\n[{carrier}] tone after greeting sample: file {in_file * 1000:.1f} ms, caller {experienced * 1000:.1f} ms"
    )
    assert abs(in_file - experienced) <= TOLERANCE_SECS


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a[:n], np.uint8) != np.frombuffer(b[:n], np.uint8))
    return int(diff[0]) if diff.size else n


def _loudest(ulaw: bytes) -> int:
    return int(np.abs(np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.int32)).max())


async def _recording_path(records: Path, call_id: str) -> Path:
    found: list[Path] = []

    def exists() -> bool:
        found[:] = list(records.glob(f"calls/*/*/*/{call_id}/recording.wav"))
        return bool(found)

    await wait_for(exists, 10, "recording.wav")
    return found[0]
