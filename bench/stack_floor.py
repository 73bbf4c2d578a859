"""The floor under bench/load.py: what the websocket stacks alone cost per call, with no call logic.

Run: `python bench/stack_floor.py --calls 100 200 --secs 8`.

Two measurements, each with the measured side pinned to core 0 and its peer on core 1:

- carrier side (server): N connections each send a Twilio `media` message every 20 ms and get
  one back every 40 ms (an agent talking half the time); the server does nothing else. Stacks:
  `hypercorn` (Starlette on Hypercorn, as the daemon serves it) and `websockets` (the
  `websockets` library's own server, the shape of a "bare Python relay").
- engine side (client): N connections each send an `input_audio_buffer.append` (20 ms of PCM16
  24 kHz) every 20 ms and receive a 100 ms audio delta every 200 ms. Libraries: `aiohttp` (what
  the daemon uses) and `websockets`. The client's pacing loop is included in both.

The daemon's own cost per call (bench/load.py) minus these two floors is what transcoding, JSON
and the call logic cost; the floors show how much of a per-call budget the stacks leave.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import uvloop

from bench.procstat import cpu_secs, rss_kb

SLOTS = 10  # connections are spread over 10 send slots per 20 ms tick, like independent calls
TWILIO_MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "2",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "20",
            "payload": base64.b64encode(b"\xff" * 160).decode(),
        },
        "streamSid": "MZ" + "0" * 32,
    }
)
APPEND = '{"type":"input_audio_buffer.append","audio":"' + base64.b64encode(b"\0" * 960).decode() + '"}'
DELTA = json.dumps(
    {
        "type": "response.output_audio.delta",
        "response_id": "resp_1",
        "item_id": "item_1",
        "content_index": 0,
        "delta": base64.b64encode(b"\0" * 4800).decode(),
    }
)


# ------------------------------------------------------------------ servers (run in a child process)


def serve(stack: str, sock: socket.socket, reply: str, every: int) -> None:
    """Answer every `every`-th message with `reply`, forever."""
    if stack == "hypercorn":
        from hypercorn.asyncio import serve as hypercorn_serve
        from hypercorn.config import Config
        from starlette.applications import Starlette
        from starlette.routing import WebSocketRoute
        from starlette.websockets import WebSocket

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            n = 0
            while True:
                message = await websocket.receive()
                if message["type"] != "websocket.receive":
                    return
                n += 1
                if n % every == 0:
                    await websocket.send_text(reply)

        config = Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.loglevel = "WARNING"
        uvloop.run(hypercorn_serve(Starlette(routes=[WebSocketRoute("/ws", endpoint)]), config))  # type: ignore[arg-type]
        return

    import websockets.asyncio.server as ws_server

    async def handler(conn: ws_server.ServerConnection) -> None:
        n = 0
        async for _ in conn:
            n += 1
            if n % every == 0:
                await conn.send(reply)

    async def main() -> None:
        async with ws_server.serve(handler, sock=sock, compression=None, max_size=None):
            await asyncio.Future()

    uvloop.run(main())


# ------------------------------------------------------------------ clients (run in this process)

Sender = Callable[[str], Awaitable[Any]]


async def drain(ws: AsyncIterable[Any]) -> None:
    """Read and drop whatever the server sends."""
    async for _ in ws:
        pass


async def open_clients(lib: str, url: str, n: int) -> tuple[list[Sender], Callable[[], Awaitable[None]]]:
    """N connections: their send functions, and a closer. Received messages are read and dropped."""
    http: aiohttp.ClientSession | None = None
    conns: list[Any]
    if lib == "aiohttp":
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        conns = [await http.ws_connect(url, max_msg_size=0) for _ in range(n)]
        senders: list[Sender] = [ws.send_str for ws in conns]
    else:
        import websockets.asyncio.client as ws_client

        conns = [await ws_client.connect(url, compression=None, max_size=None) for _ in range(n)]
        senders = [ws.send for ws in conns]
    readers = [asyncio.create_task(drain(ws)) for ws in conns]

    async def close() -> None:
        for task in readers:
            task.cancel()
        for ws in conns:
            await ws.close()
        if http is not None:
            await http.close()

    return senders, close


async def pace(senders: list[Sender], message: str, stop: asyncio.Event) -> None:
    """Each sender sends `message` every 20 ms, the senders spread over SLOTS slots of the tick."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tick = 0
    while not stop.is_set():
        for slot in range(SLOTS):
            for send in senders[slot::SLOTS]:
                await send(message)
            await asyncio.sleep(max(0.0, t0 + tick * 0.02 + (slot + 1) * 0.02 / SLOTS - loop.time()))
        tick += 1


async def measure(
    lib: str, url: str, n: int, message: str, secs: float, pid: int
) -> tuple[float, float, float]:
    """Drive N connections; return (peer process %/call, this process %/call, peer RSS MB/call)."""
    idle_rss = rss_kb(pid)
    senders, close = await open_clients(lib, url, n)
    stop = asyncio.Event()
    driver = asyncio.create_task(pace(senders, message, stop))
    await asyncio.sleep(2.0)  # warm up
    c_peer, c_self, t0 = cpu_secs(pid), cpu_secs(os.getpid()), time.monotonic()
    await asyncio.sleep(secs)
    elapsed = time.monotonic() - t0
    peer = (cpu_secs(pid) - c_peer) / elapsed * 100 / n
    own = (cpu_secs(os.getpid()) - c_self) / elapsed * 100 / n
    rss = (rss_kb(pid) - idle_rss) / 1000 / n
    stop.set()
    await driver
    await close()
    return peer, own, rss


def start_server(stack: str, reply: str, every: int) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", stack, "--fd", str(sock.fileno()), "--every", str(every)],
        pass_fds=(sock.fileno(),),
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(reply.encode())
    proc.stdin.close()
    sock.close()
    os.sched_setaffinity(proc.pid, {0})
    return proc, f"ws://127.0.0.1:{port}/ws"


async def wait_serving(url: str) -> None:
    """Until the server completes a websocket handshake (the socket accepts before the child is ready)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            try:
                ws = await http.ws_connect(url)
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
                continue
            await ws.close()
            return
    raise RuntimeError(f"server at {url} did not come up")


async def run(levels: list[int], secs: float) -> list[dict[str, Any]]:
    os.sched_setaffinity(0, {1})
    rows: list[dict[str, Any]] = []
    cases = [
        ("carrier side", "hypercorn", "aiohttp", TWILIO_MEDIA, TWILIO_MEDIA, 2, "server"),
        ("carrier side", "websockets", "aiohttp", TWILIO_MEDIA, TWILIO_MEDIA, 2, "server"),
        ("engine side", "websockets", "aiohttp", APPEND, DELTA, 10, "client"),
        ("engine side", "websockets", "websockets", APPEND, DELTA, 10, "client"),
    ]
    for n in levels:
        for side, stack, lib, message, reply, every, measured in cases:
            proc, url = start_server(stack, reply, every)
            try:
                await wait_serving(url)
                peer, own, rss = await measure(lib, url, n, message, secs, proc.pid)
            finally:
                proc.kill()
                proc.wait()
            library = stack if measured == "server" else lib
            pct = peer if measured == "server" else own
            rows.append(
                {"calls": n, "side": side, "library": library, "pct_per_call": pct, "server_rss_mb": rss}
            )
            rss_cell = f"{rss:.3f}" if measured == "server" else "-"
            print(f"| {n} | {side} | {library} | {pct:.3f} | {rss_cell} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--secs", type=float, default=8.0)
    parser.add_argument("--serve", choices=["hypercorn", "websockets"], help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        reply = sys.stdin.read()
        serve(args.serve, socket.socket(fileno=args.fd), reply, args.every)
        return
    print("| calls | side | library | CPU %/call (of one core) | server RSS MB/call |")
    print("|---|---|---|---|---|")
    uvloop.run(run(args.calls, args.secs))


if __name__ == "__main__":
    main()
