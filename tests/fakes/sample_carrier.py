"""A fake of the sample plugin's carrier network (its wire: tests/plugins/sample_plugin/patterd_sample/wire.py).

Written from the wire's description, not from the plugin's code: signed JSON webhooks to the daemon,
the JSON media socket (caller audio paced in real time, agent audio played in real time, marks echoed as
`played` once played, `clear` drops the unplayed rest), and the REST API the daemon dials, hangs up and
transfers through. It is also the contract suite's driver (`patterd.testing.carrier.CarrierDriver`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.e2e.scenarios import CALLER, NUMBER, PUBLIC_HOST, _try_ws

FRAME = 160  # 20 ms of μ-law
SILENCE = b"\xff" * FRAME


@dataclass
class RestRequest:
    method: str
    path: str
    body: dict[str, Any]


class SampleCall:
    """One call's media socket from the carrier's side (the `CarrierCall` verbs)."""

    def __init__(self, net: FakeSampleNet, carrier_id: str, call_id: str) -> None:
        self.net = net
        self.carrier_id = carrier_id
        self._call_id = call_id
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.outgoing = bytearray()
        self.buffer = bytearray()  # agent audio received, not played yet
        self.marks: deque[tuple[int, str]] = deque()  # (bytes of buffer before the mark, name)
        self.played = 0
        self.speech: list[float] = []
        self.clears: list[float] = []
        self.media: list[float] = []
        self.problems: list[str] = []
        self.transferred_to: str | None = None
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def call_id(self) -> str:
        return self._call_id

    # The wire's messages (a subclass speaks another JSON dialect: tests/fakes/softphone_driver.py).

    def start_message(self) -> dict[str, Any]:
        return {"type": "start", "call": self.carrier_id, "call_id": self._call_id}

    def audio_message(self, payload: str) -> dict[str, Any]:
        return {"type": "audio", "ulaw": payload}

    def played_message(self, name: str) -> dict[str, Any]:
        return {"type": "played", "mark": name}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"type": "dtmf", "digit": digit}

    def stop_message(self) -> dict[str, Any]:
        return {"type": "stop"}

    def parse(self, data: dict[str, Any]) -> tuple[str, str]:
        """(audio | mark | clear | caption | other, its base64 payload or mark name) of a message from the daemon."""
        kind = str(data.get("type"))
        return kind, str(data.get("ulaw") if kind == "audio" else data.get("name", ""))

    async def connect(self, url: str) -> None:
        self.ws = await self.net.session.ws_connect(self.net.local(url))
        await self.ws.send_str(json.dumps(self.start_message()))
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._read())]

    async def _pump(self) -> None:
        """Every 20 ms: one caller frame out, one frame of agent audio played (marks past it echoed)."""
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        start, tick = loop.time(), 0
        while not self.ws.closed:
            frame = bytes(self.outgoing[:FRAME]) if self.outgoing else SILENCE
            del self.outgoing[:FRAME]
            payload = base64.b64encode(frame).decode()
            try:
                await self.ws.send_str(json.dumps(self.audio_message(payload)))
                played = min(FRAME, len(self.buffer))
                del self.buffer[:played]
                self.played += played
                self.marks = deque((at - played, name) for at, name in self.marks)
                while self.marks and self.marks[0][0] <= 0:
                    await self.ws.send_str(json.dumps(self.played_message(self.marks.popleft()[1])))
            except ConnectionError:
                return
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.02 - loop.time()))  # real-time pacing

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.problems.append(f"non-text frame {msg.type}")
                continue
            kind, value = self.parse(json.loads(msg.data))
            if kind == "audio":
                self.media.append(time.monotonic())
                self.buffer += base64.b64decode(value, validate=True)
            elif kind == "mark" and value:
                self.marks.append((len(self.buffer), value))
            elif kind == "caption":  # a dialect's message with nothing to play (parse kept it)
                continue
            elif kind == "clear":
                self.clears.append(time.monotonic())
                self.buffer.clear()
                self.marks = deque((0, name) for _, name in self.marks)  # echoed on the next tick
            else:
                self.problems.append(f"unknown message {msg.data!r:.80}")
        self.closed.set()

    async def say(self, ulaw: bytes) -> None:
        self.speech.append(time.monotonic())
        self.outgoing += ulaw

    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None:
        await self.net.until(lambda: self.played >= n_bytes, timeout, f"{n_bytes} bytes heard")

    def heard_bytes(self) -> int:
        return self.played

    def speech_started(self) -> list[float]:
        return self.speech

    def clear_times(self) -> list[float]:
        return self.clears

    def media_times(self) -> list[float]:
        return self.media

    async def wait_for_clear(self, timeout: float = 5.0) -> float:
        await self.net.until(lambda: bool(self.clears), timeout, "a clear")
        return self.clears[-1]

    async def send_dtmf(self, digit: str) -> None:
        await self.send_raw(json.dumps(self.dtmf_message(digit)))

    async def send_raw(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(text)

    async def hangup_from_far_end(self) -> None:
        """The caller hangs up: `stop`, the socket closed, then the `completed` status webhook."""
        await self.close()
        status = await self.net.webhook("status", {"call": self.carrier_id, "status": "completed"})
        assert status == 204, status

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.send_str(json.dumps(self.stop_message()))
            await self.ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None:
        await self.net.until(lambda: self.net.hangups(self) > 0, timeout, "a REST hangup")
        await asyncio.wait_for(self.closed.wait(), timeout)

    def violations(self) -> list[str]:
        return self.problems


@dataclass
class FakeSampleNet:
    """The sample carrier: its REST API on loopback, its webhooks and media sockets toward the daemon."""

    api_key: str = field(default_factory=lambda: secrets.token_hex(8))
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    requests: list[RestRequest] = field(default_factory=list)
    calls: dict[str, SampleCall] = field(default_factory=dict)
    daemon_url: str = ""
    base_url: str = ""
    _session: aiohttp.ClientSession | None = None
    _runner: web.AppRunner | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the fake is not started"
        return self._session

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/calls", self._create)
        app.router.add_post("/v1/calls/{id}/{action}", self._act)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        for call in list(self.calls.values()):
            await call.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def local(self, url: str) -> str:
        """A public wss:// URL of the daemon as this machine reaches it."""
        return url.replace(f"wss://{PUBLIC_HOST}", self.daemon_url.replace("http://", "ws://"))

    async def until(self, predicate: Any, timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.02)  # the state changes on the fake's own sockets

    async def webhook(self, hook: str, body: dict[str, Any], signature: str | None = None) -> int:
        status, _ = await self._post_hook(hook, body, signature)
        return status

    async def _post_hook(self, hook: str, body: dict[str, Any], signature: str | None) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        stamp = str(int(time.time()))
        sign = hmac.new(self.secret.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        headers = {"X-Sample-Signature": signature or sign, "X-Sample-Timestamp": stamp}
        headers["Content-Type"] = "application/json"
        url = f"{self.daemon_url}/webhooks/sample/{hook}"
        async with self.session.post(url, data=raw, headers=headers) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if "json" in resp.content_type else text

    async def ring(self, carrier_id: str, from_: str, to: str, call_id: str | None = None) -> SampleCall:
        """The `voice` webhook; on `stream`, the media socket opened to the URL it named."""
        body = {
            "call": carrier_id,
            "from": from_,
            "to": to,
            "direction": "outbound" if call_id else "inbound",
        }
        if call_id:
            body["call_id"] = call_id
        status, answer = await self._post_hook("voice", body, None)
        assert status == 200 and answer.get("action") == "stream", (status, answer)
        call = SampleCall(self, carrier_id, str(answer["call_id"]))
        self.calls[carrier_id] = call
        await call.connect(str(answer["url"]))
        return call

    def hangups(self, call: SampleCall) -> int:
        return sum(1 for r in self.requests if r.path == f"/v1/calls/{call.carrier_id}/hangup")

    def _authorized(self, request: web.Request) -> bool:
        return hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {self.api_key}")

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        self.requests.append(RestRequest("POST", request.path, body))
        return web.json_response({"id": "sc-" + secrets.token_hex(6)}, status=201)

    async def _act(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        self.requests.append(RestRequest("POST", request.path, body))
        call = self.calls.get(request.match_info["id"])
        if call is None:
            return web.json_response({"error": "no such call"}, status=404)
        if request.match_info["action"] == "transfer":
            call.transferred_to = str(body.get("to"))
        elif request.match_info["action"] != "hangup":
            return web.json_response({"error": "unknown action"}, status=404)
        asyncio.get_running_loop().create_task(call.close())  # the carrier ends our leg of the call
        return web.json_response({}, status=202)


class SampleDriver:
    """The contract suite's driver for `carrier.sample`."""

    name = "sample"

    def __init__(self) -> None:
        self.net = FakeSampleNet()

    async def start(self) -> None:
        await self.net.start()

    async def close(self) -> None:
        await self.net.close()

    def config(self) -> str:
        return (
            f"carrier: {{type: sample, api_key: {self.net.api_key}, signing_secret: {self.net.secret}, "
            f"base_url: '{self.net.base_url}'}}\n"
        )

    async def attach(self, daemon_url: str) -> None:
        self.net.daemon_url = daemon_url

    async def detach(self) -> None:
        for call in list(self.net.calls.values()):
            await call.close()

    async def inbound_call(self, from_: str = CALLER, to: str = NUMBER) -> SampleCall:
        return await self.net.ring("sc-" + secrets.token_hex(6), from_, to)

    async def answer_outbound(self, to: str, answered_by: str = "human") -> SampleCall:
        await self.net.until(lambda: bool(self._dials()), 10, "a dial")
        dial = self._dials()[-1]
        index = len(self._dials()) - 1
        assert dial.body["to"] == to, dial
        return await self.net.ring(f"sc-out-{index}", NUMBER, to, str(dial.body["call_id"]))

    def _dials(self) -> list[RestRequest]:
        return [r for r in self.net.requests if r.path == "/v1/calls"]

    def dial_request(self) -> dict[str, Any]:
        return dict(self._dials()[-1].body)

    async def send_bad_signature(self) -> int:
        body = {"call": "sc-forged", "from": CALLER, "to": NUMBER}
        return await self.net.webhook("voice", body, signature="0" * 64)

    async def open_media(self, call_id: str) -> int | None:
        url = self.net.local(f"wss://{PUBLIC_HOST}/ws/sample/{call_id}?token=guess")
        return await _try_ws(self.net.session, url, {})

    def hangup_requests(self, call: object) -> int:
        assert isinstance(call, SampleCall)
        return self.net.hangups(call)

    async def wait_transferred(self, call: object, timeout: float = 10.0) -> str:
        assert isinstance(call, SampleCall)
        await self.net.until(lambda: call.transferred_to is not None, timeout, "a REST transfer")
        return str(call.transferred_to)
