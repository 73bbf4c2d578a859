"""ElevenLabs TTS transports compared: time to first audio byte per sentence, connection setup included.

The pipeline speaks a reply sentence by sentence (`TTS.synthesize(sentence)`), so each sentence is
one utterance. Each strategy speaks the same calls (REPLIES turns of up to 3 sentences, a pause
between turns) against tests/fakes/elevenlabs.py behind a relay that adds network delay:

- every byte each way waits RTT/2;
- a new connection's first byte waits 2 RTT more (TCP handshake + TLS 1.3 handshake);
- the fake adds model latency before the first audio (`--model-ms`, eleven_flash_v2_5 is quoted at
  ~75 ms) and makes audio at `--speed`× real time in 100 ms chunks.

Strategies:
- `http-keepalive`: POST /stream per sentence on one aiohttp session (what tts.elevenlabs does);
- `http-new-conn`: the same without keep-alive (a handshake per sentence);
- `ws-per-sentence`: a fresh stream-input socket per sentence (" ", text+flush, "" → isFinal);
- `ws-prewarmed`: the same, but the next socket is opened ahead, while the previous one plays
  (it must be used before inactivity_timeout, 20 s by default, or it is closed);
- `ws-per-reply`: one socket per reply, each sentence sent with flush as it comes, "" at the end.

Run: python bench/elevenlabs_transport.py [--rtt-ms 40] [--model-ms 75] [--turns 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from patterd.protocols import elevenlabs as wire  # noqa: E402
from patterd.providers.elevenlabs import Options, build  # noqa: E402
from patterd.providers.spec import BuildContext  # noqa: E402
from tests.fakes.elevenlabs import FakeElevenLabsServer  # noqa: E402

KEY = "el-test-key"
VOICE = wire.PREMADE_VOICES["rachel"]
MODEL = wire.DEFAULT_MODEL
REPLIES = [
    ["Thanks for calling Acme Dental.", "How can I help you today?"],
    ["We are open from nine to five on weekdays.", "On Saturdays we open at ten.", "Sundays we are closed."],
    ["Sure, I can book that for you.", "What day works best?"],
    ["Tuesday at three is free.", "Shall I put you down for it?"],
]


class DelayRelay:
    """A TCP relay adding RTT/2 per direction, and 2 RTT before a new connection's first byte."""

    def __init__(self, target_port: int, rtt_ms: float) -> None:
        self.target_port = target_port
        self.half = rtt_ms / 2000
        self.handshake = 2 * rtt_ms / 1000
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> DelayRelay:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        opened = time.monotonic()
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, opened + self.handshake)),
            asyncio.create_task(self._pump(up_reader, writer, 0.0)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, not_before: float
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not data:
                    writer.close()
                    return
                writer.write(data)

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((max(time.monotonic(), not_before) + self.half, data))
            queue.put_nowait((time.monotonic() + self.half, b""))
            await delivering
        except (ConnectionError, asyncio.CancelledError):
            delivering.cancel()
            writer.transport.abort()


Speak = Callable[[str], AsyncIterator[bytes]]


async def first_byte_ms(speak: Speak, text: str) -> float:
    """ms from asking for `text` to its first audio byte; the rest is drained (played)."""
    started = time.monotonic()
    first: float | None = None
    async for chunk in speak(text):
        if chunk and first is None:
            first = (time.monotonic() - started) * 1000
    assert first is not None
    return first


async def ws_sentence(
    http: aiohttp.ClientSession, base: str, ws: aiohttp.ClientWebSocketResponse | None, text: str
) -> AsyncIterator[bytes]:
    """One sentence on its own stream-input socket (opened now unless given)."""
    if ws is None:
        ws = await http.ws_connect(wire.ws_url(base, VOICE, MODEL, "ulaw_8000"), headers=wire.headers(KEY))
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(ws.close)
        await ws.send_str(wire.ws_open())
        await ws.send_str(wire.ws_text(text, flush=True))
        await ws.send_str(wire.ws_close())
        async for msg in ws:
            event = wire.parse_ws(msg.data)
            if isinstance(event, wire.WsAudio):
                yield event.audio
            elif isinstance(event, wire.WsFinal | wire.WsError):
                break


async def run_strategy(
    name: str, base: str, relay: DelayRelay, turns: int, gap_secs: float
) -> tuple[list[float], list[float], int]:
    """(first-sentence TTFBs, later-sentence TTFBs, connections opened)."""
    firsts: list[float] = []
    laters: list[float] = []
    before = relay.connections
    if name.startswith("http"):
        keep = name == "http-keepalive"
        options = Options(api_key=KEY, base_url=base, keepalive_secs=60.0 if keep else 0.0)
        async with build(options, BuildContext()) as tts:
            for turn in range(turns):
                for i, sentence in enumerate(REPLIES[turn % len(REPLIES)]):
                    (firsts if i == 0 else laters).append(await first_byte_ms(tts.synthesize, sentence))
                await asyncio.sleep(gap_secs)
        return firsts, laters, relay.connections - before
    async with aiohttp.ClientSession() as http:
        spare: asyncio.Task[aiohttp.ClientWebSocketResponse] | None = None

        def open_spare() -> asyncio.Task[aiohttp.ClientWebSocketResponse]:
            return asyncio.create_task(
                http.ws_connect(wire.ws_url(base, VOICE, MODEL, "ulaw_8000"), headers=wire.headers(KEY))
            )

        if name == "ws-prewarmed":
            spare = open_spare()  # during the greeting's set-up, before the first turn
            await asyncio.sleep(gap_secs)
        for turn in range(turns):
            reply = REPLIES[turn % len(REPLIES)]
            if name == "ws-per-reply":
                started = time.monotonic()
                ws = await http.ws_connect(
                    wire.ws_url(base, VOICE, MODEL, "ulaw_8000"), headers=wire.headers(KEY)
                )
                await ws.send_str(wire.ws_open())
                for i, sentence in enumerate(reply):
                    await ws.send_str(wire.ws_text(sentence, flush=True))
                    async for (
                        msg
                    ) in ws:  # up to this sentence's last chunk (the fake marks none: read by length)
                        event = wire.parse_ws(msg.data)
                        if isinstance(event, wire.WsAudio):
                            (firsts if i == 0 else laters).append((time.monotonic() - started) * 1000)
                            break
                    await drain_sentence(ws, sentence)
                    started = time.monotonic()
                await ws.send_str(wire.ws_close())
                async for _ in ws:
                    pass
            else:
                for i, sentence in enumerate(reply):
                    if name == "ws-prewarmed":
                        assert spare is not None
                        started = time.monotonic()
                        ws = await spare  # waiting for a socket still opening counts
                        waited = (time.monotonic() - started) * 1000
                        spare = open_spare()  # the next sentence's socket opens while this one plays
                        ttfb = waited + await first_byte_ms(
                            functools.partial(ws_sentence, http, base, ws), sentence
                        )
                    else:
                        ttfb = await first_byte_ms(functools.partial(ws_sentence, http, base, None), sentence)
                    (firsts if i == 0 else laters).append(ttfb)
            await asyncio.sleep(gap_secs)
        if spare is not None:
            await (await spare).close()
    return firsts, laters, relay.connections - before


async def drain_sentence(ws: aiohttp.ClientWebSocketResponse, sentence: str) -> None:
    """Read the rest of one flushed sentence's audio: the fake makes ms_per_char × len ms of it."""
    # The API marks no end per flushed sentence (isFinal comes only after "" closes the input), so
    # here the end is known from the fake's audio length: ms_per_char × characters, first chunk read.
    want = max(100, int(len(sentence.strip()) * 60)) * 8 - 8 * 100
    got = 0
    while got < want:
        event = wire.parse_ws((await ws.receive()).data)
        if isinstance(event, wire.WsAudio):
            got += len(event.audio)
        elif event is not None:
            raise RuntimeError(f"stream ended mid-sentence: {event}")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rtt-ms", type=float, default=40.0)
    parser.add_argument("--model-ms", type=float, default=75.0)
    parser.add_argument("--speed", type=float, default=4.0)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--gap-secs", type=float, default=0.5, help="caller's turn between replies")
    parser.add_argument(
        "--strategies",
        nargs="*",
        default=["http-keepalive", "http-new-conn", "ws-per-sentence", "ws-prewarmed", "ws-per-reply"],
    )
    args = parser.parse_args()
    print(
        f"RTT {args.rtt_ms:g} ms, model {args.model_ms:g} ms, audio at {args.speed:g}x real time, {args.turns} turns"
    )
    print(
        f"{'strategy':18} {'1st sentence p50/max ms':>24} {'later sentences p50/max ms':>27} {'connections':>12}"
    )
    async with FakeElevenLabsServer(first_byte_ms=args.model_ms, speed=args.speed) as fake:
        async with DelayRelay(fake.port, args.rtt_ms) as relay:
            base = f"http://127.0.0.1:{relay.port}"
            for name in args.strategies:
                firsts, laters, conns = await run_strategy(name, base, relay, args.turns, args.gap_secs)
                print(
                    f"{name:18} {statistics.median(firsts):>15.0f} / {max(firsts):<6.0f}"
                    f" {statistics.median(laters):>18.0f} / {max(laters):<6.0f} {conns:>12}"
                )


if __name__ == "__main__":
    asyncio.run(main())
