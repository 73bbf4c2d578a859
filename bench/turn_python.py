"""bench/turn_latency.py's Python harness: load.py's callers and the Realtime fake, paced, in Python processes.

Its callers and engine cost ~1 % of a core per call: on 2 cores it starves near 100 calls (the C
generator, bench/turn_c.py, is the default). Importing it patches the Realtime fake (bench.load, PacedSession).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import json
import math
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import bench.load as load  # its import patches the fake for speed (no per-append jsonschema)
import tests.fakes.openai_realtime as fake_rt
from bench.load_callers import past_greeting
from bench.load_common import SETTLE_SECS
from bench.procstat import cpu_times
from bench.turn_report import FRAME_SECS, LATE_MS, LISTEN_SECS, RULE_FRAMES, make_row
from bench.turn_targets import target
from patterd.protocols.audio import FRAME_BYTES
from tests.fakes.twilio import FakeTwilio, FakeTwilioRest

# ------------------------------------------------------------------ the engine (this process)


class PacedSession(load.BenchSession):
    """The fake's session answering in 20 ms deltas on an absolute real-time schedule.

    The stock fake sleeps a chunk's time after each send, so its pace drifts later by its own
    processing time: over a 2 s answer that alone would read as late frames for every target.
    """

    async def speak(self, resp: Any, text: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        item_id = self.server.new_id("item")
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
        }
        item |= {"status": "in_progress", "content": []}
        ids = {"response_id": resp.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        await self.send(
            {"type": "response.output_item.added", "response_id": resp.id, "output_index": 0, "item": item}
        )
        part = {"type": "audio", "transcript": ""}
        await self.send({"type": "response.content_part.added", **ids, "part": part})
        chunk = 960 if self.output_format == "audio/pcm" else FRAME_BYTES
        self.item_audio_ms[item_id] = 0.0
        await self.send({"type": "response.output_audio_transcript.delta", **ids, "delta": text})
        # The deltas' JSON is made once per reply and format (the same line every turn), then sent
        # as text: json.dumps + base64 per delta at 50 deltas/s × N calls would saturate the fakes.
        head = json.dumps({"type": "response.output_audio.delta", **ids})[:-1] + ', "delta": "'
        pieces = _delta_payloads(text, self.output_format, chunk)
        stopped = load.ENGINE.stopped.pop(id(self), None)  # speech_stopped → first delta: the fake's own time
        t0 = loop.time()
        for k, payload in enumerate(pieces):
            if resp.cancelled:
                break
            delay = t0 + k * FRAME_SECS - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self.send_lock:
                await self.ws.send(head + payload + '"}')
            if stopped is not None:
                load.ENGINE.delays_ms.append((loop.time() - stopped) * 1000)
                stopped = None
            self.item_audio_ms[item_id] += 20.0
        if not resp.cancelled:
            await self.send({"type": "response.output_audio.done", **ids})
            await self.send({"type": "response.output_audio_transcript.done", **ids, "transcript": text})
            await self.send(
                {"type": "response.content_part.done", **ids, "part": {"type": "audio", "transcript": text}}
            )
        done = {**item, "status": "incomplete" if resp.cancelled else "completed"}
        done["content"] = [{"type": "output_audio", "transcript": text}]
        await self.send(
            {"type": "response.output_item.done", "response_id": resp.id, "output_index": 0, "item": done}
        )
        return done


@functools.cache
def _delta_payloads(text: str, fmt: str, chunk: int) -> list[str]:
    audio = fake_rt.pcm24_to_format(fake_rt.speak_pcm24(text), fmt)
    return [base64.b64encode(audio[i : i + chunk]).decode() for i in range(0, len(audio), chunk)]


fake_rt._Session = PacedSession  # type: ignore[misc]


# ------------------------------------------------------------------ the callers (worker processes)


class TurnStream(load.LeanStream):
    """A LeanStream that notes when it sent the frame completing the engine's end-of-turn rule."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_sid: str) -> None:
        super().__init__(ws, stream_sid)
        self.quiet = -1  # frames since the last speech frame (-1: none yet)
        self.rule_at: float | None = None
        self.ruled: asyncio.Future[None] | None = None  # set when the rule-completing frame goes out

    def frame(self, silence_b64: str) -> str | None:
        speaking = bool(self.speech)
        text = super().frame(silence_b64)
        if speaking:
            self.quiet = 0
        elif self.quiet >= 0:
            self.quiet += 1
            if self.quiet == RULE_FRAMES:
                self.rule_at = self.loop.time()  # the Ticker sends it right after this returns
                if self.ruled is not None and not self.ruled.done():
                    self.ruled.set_result(None)
        return text


@dataclass
class Stats:
    added_ms: list[float] = field(default_factory=list)
    jitter_ms: list[float] = field(default_factory=list)
    late: int = 0
    frames: int = 0
    errors: list[str] = field(default_factory=list)


async def caller(
    net: FakeTwilio,
    session: aiohttp.ClientSession,
    ticker: load.Ticker,
    index: int,
    speech: list[str],
    until: float,
    measure_from: float,
    stats: Stats,
) -> None:
    loop = asyncio.get_running_loop()
    try:
        opened = await past_greeting(net, session, index, TurnStream, ticker, stats.errors)
        if opened is None:
            return
        stream, reader = opened
        while loop.time() < until and not stream.closed:
            stream.rule_at = None
            stream.ruled = loop.create_future()
            try:
                async with asyncio.timeout(15):
                    await stream.say(speech)
                    # The engine can only answer after this frame: later ones are the answer.
                    await stream.ruled
            except TimeoutError:
                stats.errors.append(f"caller {index}: could not finish its turn")
                break
            rule_at = stream.rule_at
            assert rule_at is not None
            first = len(stream.media_times)
            stream.waiter = loop.create_future()
            try:
                async with asyncio.timeout(10):
                    await stream.waiter
            except TimeoutError:
                stats.errors.append(f"caller {index}: no answer to a turn")
                continue
            # The answer plays (about 2.1 s), then the caller speaks again.
            await asyncio.sleep(max(0.0, stream.media_times[first] + LISTEN_SECS - loop.time()))
            if rule_at < measure_from:
                continue
            times = stream.media_times[first:]
            stats.added_ms.append((times[0] - rule_at) * 1000)
            stats.frames += len(times)
            stats.jitter_ms.extend(abs((b - a) - FRAME_SECS) * 1000 for a, b in itertools.pairwise(times))
            t0 = times[0]
            stats.late += sum(1 for k, t in enumerate(times) if (t - t0 - k * FRAME_SECS) * 1000 > LATE_MS)
        if stream.closed:
            stats.errors.append(f"caller {index}: the stream was closed")
        await stream.stop()
        reader.cancel()
    except Exception as exc:
        stats.errors.append(f"caller {index}: {type(exc).__name__}: {exc}")


async def _worker_main(job: dict[str, Any]) -> dict[str, Any]:
    ulaw: bytes = job["speech"]
    speech = [base64.b64encode(ulaw[i : i + FRAME_BYTES]).decode() for i in range(0, len(ulaw), FRAME_BYTES)]
    ticker = load.Ticker(base64.b64encode(b"\xff" * FRAME_BYTES).decode())
    ticker.origin = job["measure_from"]
    stats = Stats()
    loop = asyncio.get_running_loop()
    async with (
        FakeTwilio(
            job["url"], load.PUBLIC_HOST, account_sid=job["account_sid"], auth_token=job["auth_token"]
        ) as net,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        tick = asyncio.ensure_future(ticker.run(job["until"] + 15))
        tasks = []
        for index, at in job["starts"]:
            await asyncio.sleep(max(0.0, at - loop.time()))
            tasks.append(
                asyncio.ensure_future(
                    caller(net, session, ticker, index, speech, job["until"], job["measure_from"], stats)
                )
            )
        await asyncio.gather(*tasks)
        tick.cancel()
    return {
        "added_ms": stats.added_ms,
        "jitter_ms": stats.jitter_ms,
        "late": stats.late,
        "frames": stats.frames,
        "errors": stats.errors,
        "tick_lag_ms": ticker.max_lag_ms,
    }


def _worker(job: dict[str, Any], conn: Any, cores: set[int]) -> None:
    os.sched_setaffinity(0, cores)
    conn.send(asyncio.run(_worker_main(job)))
    conn.close()


async def run_level(kind: str, n: int, secs: float, ramp_secs: float, speech: bytes) -> dict[str, Any]:
    """One target at n calls, driven by the Python harness: its row (bench/turn_report.make_row)."""
    load.ENGINE.stopped.clear()
    load.ENGINE.delays_ms.clear()
    rest = FakeTwilioRest()
    await rest.start()
    tmp = Path(tempfile.mkdtemp(prefix="patterd-turn-"))
    cores = load.CORES
    fake_cores = set(cores[1:]) if len(cores) >= 2 else set(cores)
    async with load.BenchEngine(api_key="sk-bench", pace=1.0, chunk_ms=20) as engine:
        fake_rt.speak_pcm24(load.REPLY_TEXT)  # rendered once, before the clock starts
        cm = target(kind, engine.url, rest, tmp)
        pid, url = await asyncio.to_thread(cm.__enter__)
        if len(cores) >= 2:
            os.sched_setaffinity(pid, {cores[0]})
            os.sched_setaffinity(0, fake_cores)
        procs: list[tuple[Any, Any]] = []
        try:
            loop = asyncio.get_running_loop()
            start = loop.time() + 1.5
            measure_from = start + ramp_secs + SETTLE_SECS
            until = measure_from + secs
            ctx = mp.get_context("spawn")
            workers = max(1, math.ceil(n / 100))
            for w in range(workers):
                job = {
                    "speech": speech,
                    "url": url,
                    "account_sid": rest.account_sid,
                    "auth_token": rest.auth_token,
                    "starts": [(i, start + ramp_secs * i / n) for i in range(w, n, workers)],
                    "until": until,
                    "measure_from": measure_from,
                }
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(job, child, fake_cores), daemon=True)
                proc.start()
                procs.append((proc, parent))
            fake_pids = [os.getpid()] + [p.pid for p, _ in procs]
            await asyncio.sleep(max(0.0, measure_from - loop.time()))
            cpu0, fakes0, wall0 = cpu_times(pid), load._fakes_cpu(fake_pids), time.monotonic()
            await asyncio.sleep(max(0.0, until - loop.time()))
            cpu1, fakes1, wall1 = cpu_times(pid), load._fakes_cpu(fake_pids), time.monotonic()
            results = [await asyncio.to_thread(conn.recv) for _, conn in procs]
        finally:
            for proc, _ in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.kill()
            await asyncio.to_thread(cm.__exit__, None, None, None)
            await rest.close()
    wall = wall1 - wall0
    cpu_pct = (sum(cpu1) - sum(cpu0)) / wall * 100
    fakes_pct = (fakes1 - fakes0) / wall * 100
    added = [x for r in results for x in r["added_ms"]]
    jitter = [x for r in results for x in r["jitter_ms"]]
    errors = [x for r in results for x in r["errors"]]
    max_lag = max(r["tick_lag_ms"] for r in results)
    return make_row(
        kind,
        n,
        "python",
        added=added,
        jitter=jitter,
        late=sum(r["late"] for r in results),
        frames=sum(r["frames"] for r in results),
        engine_delays=load.ENGINE.delays_ms,
        errors=errors,
        cpu_pct=cpu_pct,
        fakes_pct=fakes_pct,
        fake_cores=fake_cores,
        tick_lag_ms=max_lag,
    )
