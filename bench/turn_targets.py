"""The processes bench/turn_latency.py measures: the bare relay (the floor), patterd pcmu/pcm, pcm through soxr."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp

from bench.load_common import PUBLIC_HOST, SILENCE_MS
from bench.load_window import write_config
from tests.daemon_process import run_daemon
from tests.fakes.twilio import FakeTwilioRest

RELAY_PATH = "/relay/stream"

# ------------------------------------------------------------------ the floor: a bare relay (own process)

SESSION_UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": "You are a load test.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": SILENCE_MS},
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"},
            },
        },
    }
)


def _relay_app(engine_url: str, auth_token: str, public_host: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect
    from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

    validator = RequestValidator(auth_token)
    http: dict[str, aiohttp.ClientSession] = {}
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f'<Stream url="wss://{public_host}{RELAY_PATH}"/></Connect></Response>'
    )

    async def voice(request: Request) -> Response:
        params = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        url = f"https://{public_host}{request.url.path}"
        if not validator.validate(url, params, request.headers.get("X-Twilio-Signature", "")):
            return Response("bad signature", 403)
        return Response(twiml, media_type="application/xml")

    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        sid = ""
        while not sid:
            event = json.loads(await ws.receive_text())
            if event.get("event") == "start":
                sid = event["start"]["streamSid"]
        session = http.get("s")
        if session is None:
            session = http["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        engine = await session.ws_connect(
            engine_url + "?model=gpt-realtime", headers={"Authorization": "Bearer sk-bench"}
        )
        await engine.send_str(SESSION_UPDATE)
        await engine.send_str('{"type":"response.create"}')  # the greeting
        head = '{"event":"media","streamSid":' + json.dumps(sid) + ',"media":{"payload":"'

        async def down() -> None:
            async for msg in engine:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                if event.get("type") == "response.output_audio.delta":
                    await ws.send_text(head + event["delta"] + '"}}')

        pump = asyncio.ensure_future(down())
        try:
            while True:
                event = json.loads(await ws.receive_text())
                kind = event.get("event")
                if kind == "media":
                    payload = event["media"]["payload"]
                    await engine.send_str('{"type":"input_audio_buffer.append","audio":"' + payload + '"}')
                elif kind == "stop":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            pump.cancel()
            await engine.close()

    return Starlette(
        routes=[Route("/webhooks/twilio/voice", voice, methods=["POST"]), WebSocketRoute(RELAY_PATH, stream)]
    )


def _relay_main(port: int, engine_url: str, auth_token: str, public_host: str, ready: Any) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    app = _relay_app(engine_url, auth_token, public_host)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, ready.set)
        await serve(app, config)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SOXR_BEFORE = """
import audioop
import numpy as np
import soxr
import patterd.protocols.audio as audio


class UlawToPcm24:
    def __init__(self):
        self._stream = soxr.ResampleStream(8000, 24000, 1, dtype="int16", quality="LQ")

    def process(self, ulaw):
        samples = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype="<i2")
        return bytes(self._stream.resample_chunk(samples).tobytes())


class Pcm24ToUlaw:
    def __init__(self):
        self._stream = None
        self._odd = b""

    def process(self, pcm):
        if self._odd:
            pcm, self._odd = self._odd + pcm, b""
        if len(pcm) & 1:
            self._odd, pcm = pcm[-1:], pcm[:-1]
        if self._stream is None:
            self._stream = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality="LQ")
        return bytes(audioop.lin2ulaw(self._stream.resample_chunk(np.frombuffer(pcm, dtype="<i2")), 2))

    def flush(self):
        stream, self._stream, self._odd = self._stream, None, b""
        if stream is None:
            return b""
        return bytes(audioop.lin2ulaw(stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True), 2))

    def reset(self):
        self._stream, self._odd = None, b""


audio.UlawToPcm24, audio.Pcm24ToUlaw = UlawToPcm24, Pcm24ToUlaw
"""


@contextlib.contextmanager
def target(kind: str, engine_url: str, rest: FakeTwilioRest, tmp: Path) -> Iterator[tuple[int, str]]:
    """The process under test, talking to the engine at engine_url: (pid, base url)."""
    if kind == "relay":
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        port = _free_port()
        proc = ctx.Process(
            target=_relay_main, args=(port, engine_url, rest.auth_token, PUBLIC_HOST, ready), daemon=True
        )
        proc.start()
        try:
            if not ready.wait(30):
                raise RuntimeError("the relay did not start")
            assert proc.pid is not None
            yield proc.pid, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.join(10)
        return
    config = write_config(tmp, rest, engine_url, kind.split("-")[0], server_workers=1)
    env = None
    if kind == "pcm-soxr":
        # The same tree with the resampler patterd used before (soxr LQ streams) put back in
        # place at interpreter start: the one change under test, measured in the same noise.
        (tmp / "sitecustomize.py").write_text(SOXR_BEFORE)
        env = {"PYTHONPATH": str(tmp)}
    with run_daemon(config, env=env) as daemon:
        yield daemon.proc.pid, daemon.base_url
