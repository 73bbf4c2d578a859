"""Four softphone calls on whisper at once: recognising one caller never starves another caller's agent audio."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from patterd.protocols.audio import FRAME_BYTES, silence_ulaw, wav_to_ulaw8k
from patterd.providers import offline_whisper
from tests.inprocess_daemon import running_daemon

ROOT = Path(__file__).resolve().parents[2]
CALLS = 4
LINE = "what are your opening hours"
STAGGER_SECS = 0.8  # caller i starts talking this much after caller i-1
# A softphone plays what it got in real time: a chunk that arrives this much after the audio before
# it has finished playing is a gap the caller hears.
GAP_TOLERANCE_SECS = 0.06
# The daemon's event loop moves every call's 20 ms frames: while whisper works it must stay on time.
# (Recognition on the loop itself would hold it for a whole utterance, 0.4 s or more.)
MAX_LOOP_LAG_SECS = 0.25

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@dataclass
class Softphone:
    """One caller on `WS /ws/local/{id}`: 20 ms frames in real time, agent audio timed as it arrives."""

    ws: aiohttp.ClientWebSocketResponse
    spoke_at: float = 0.0
    done_speaking_at: float = 0.0
    chunks: list[tuple[float, int]] = field(default_factory=list)  # (arrival, bytes) of agent audio
    texts: list[tuple[str, str]] = field(default_factory=list)  # transcript lines shown on the page

    async def send_audio(self, ulaw: bytes, start: float) -> None:
        for i, offset in enumerate(range(0, len(ulaw), FRAME_BYTES)):
            payload = base64.b64encode(ulaw[offset : offset + FRAME_BYTES]).decode()
            await self.ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))

    async def receive(self, stop: asyncio.Event) -> None:
        play_end = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(self.ws.receive(), 0.2)
            except TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                return
            body = json.loads(msg.data)
            now = time.monotonic()
            if body["event"] == "media":
                audio = base64.b64decode(body["media"]["payload"])
                self.chunks.append((now, len(audio)))
                play_end = max(now, play_end) + len(audio) / 8000
            elif body["event"] == "mark":  # echoed once played, like the browser does
                echo = json.dumps({"event": "mark", "mark": {"name": body["mark"]["name"]}})
                loop.call_later(
                    max(0.0, play_end - now), lambda m=echo: asyncio.ensure_future(self.ws.send_str(m))
                )
            elif body["event"] == "transcript" and not body.get("partial"):
                self.texts.append((body["role"], body["text"]))

    def gaps(self) -> list[float]:
        """Seconds of silence heard inside the agent's reply: chunks that came after the audio before them ran out."""
        found, play_end = [], None
        for arrival, size in self.chunks:
            if play_end is not None and arrival > play_end + GAP_TOLERANCE_SECS:
                found.append(arrival - play_end)
            play_end = max(arrival, play_end or arrival) + size / 8000
        return found

    def playing(self) -> tuple[float, float]:
        """When the reply started and finished playing at the caller."""
        start, end = self.chunks[0][0], self.chunks[0][0]
        for arrival, size in self.chunks:
            end = max(arrival, end) + size / 8000
        return start, end


def config_text(records: Path) -> str:
    """The shipped front desk on whisper, without a greeting: the agent speaks only to answer."""
    config = yaml.safe_load((ROOT / "config" / "patter.yaml").read_text())
    config["persist"] = str(records)
    agent = config["agents"][0]
    agent.pop("first_message")
    agent["stt"]["engine"] = "whisper"
    return yaml.safe_dump(config)


async def frame_clock(lags: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """A 20 ms frame clock on the daemon's loop, noting how late each tick ran."""
    due = time.monotonic()
    while not stop.is_set():
        due += 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        lags.append((now, now - due))
        due = max(due, now - 0.02)  # after a stall, tick on from now rather than catching up


def timed(fn: Callable[[bytes], Any], spans: list[tuple[float, float]]) -> Callable[[bytes], Any]:
    def run(pcm: bytes) -> Any:
        start = time.monotonic()
        try:
            return fn(pcm)
        finally:
            spans.append((start, time.monotonic()))

    return run


async def test_four_calls_hear_unbroken_replies_while_others_are_recognised(tmp_path: Path) -> None:
    speech = wav_to_ulaw8k(
        subprocess.run(
            ["espeak-ng", "--stdout", "-v", "en-us", "-s", "160", LINE], capture_output=True, check=True
        ).stdout
    )
    path = tmp_path / "patter.yaml"
    path.write_text(config_text(tmp_path / "records"))
    spans: list[tuple[float, float]] = []  # when whisper was transcribing someone
    async with running_daemon(path) as (_daemon, base_url, _task), aiohttp.ClientSession() as http:
        for engine in offline_whisper._engines.values():
            setattr(engine, "transcribe", timed(engine.transcribe, spans))  # noqa: B010 (instrument the instance)
        phones = []
        for _ in range(CALLS):
            async with http.post(base_url + "/webhooks/local/voice", json={}) as resp:
                assert resp.status == 201
                answer = await resp.json()
            ws = await http.ws_connect(base_url.replace("http", "ws") + answer["media_path"])
            await ws.send_str(json.dumps({"event": "start"}))
            phones.append(Softphone(ws))
        stop = asyncio.Event()
        receivers = [asyncio.create_task(p.receive(stop)) for p in phones]
        lags: list[tuple[float, float]] = []
        ticker = asyncio.create_task(frame_clock(lags, stop))

        async def call(index: int, phone: Softphone, t0: float) -> None:
            lead = 0.6 + index * STAGGER_SECS  # line silence before this caller talks
            await phone.send_audio(silence_ulaw(round(lead * 1000)), t0)
            phone.spoke_at = time.monotonic()
            await phone.send_audio(speech, phone.spoke_at)
            phone.done_speaking_at = time.monotonic()
            # Keep the line open until the reply has played and the line went quiet (or 60 s).
            t = time.monotonic()
            while time.monotonic() - phone.done_speaking_at < 60:
                await phone.send_audio(silence_ulaw(200), t)
                t = time.monotonic()
                if phone.chunks and t > phone.playing()[1] + 1.0:
                    break
            await phone.ws.send_str(json.dumps({"event": "stop"}))

        t0 = time.monotonic()
        await asyncio.gather(*(call(i, p, t0) for i, p in enumerate(phones)))
        stop.set()
        await asyncio.gather(*receivers, ticker)
        for phone in phones:
            await phone.ws.close()
    for phone in phones:
        assert (
            "assistant",
            "We are open Monday to Friday, 9 am to 5 pm, and Saturday 10 am to 2 pm.",
        ) in phone.texts, phone.texts
    # The scenario happened: whisper was busy with one caller while another caller's reply was playing.
    overlaps = [
        (i, span)
        for i, phone in enumerate(phones)
        for span in spans
        if span[0] < phone.playing()[1] and span[1] > phone.playing()[0]
    ]
    assert overlaps, (spans, [p.playing() for p in phones])
    gaps = {i: phone.gaps() for i, phone in enumerate(phones)}
    lag_while_recognising = max(lag for t, lag in lags if any(a <= t <= b for a, b in spans))
    delivery = [
        (len(p.chunks), round(p.chunks[-1][0] - p.chunks[0][0], 2), round(p.playing()[1] - p.playing()[0], 2))
        for p in phones
    ]
    print(
        f"recognition spans {len(spans)}, overlapping another caller's reply {len(overlaps)}; "
        f"(chunks, sent over s, played over s) per call {delivery}; gaps {gaps}; "
        f"frame clock lag while recognising {lag_while_recognising * 1000:.0f} ms "
        f"(all: {max(lag for _, lag in lags) * 1000:.0f} ms)"
    )
    assert lag_while_recognising < MAX_LOOP_LAG_SECS
    assert all(not g for g in gaps.values()), gaps
