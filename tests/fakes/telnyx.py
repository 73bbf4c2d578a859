"""A protocol-faithful fake Telnyx: Call Control REST, signed webhooks, and the caller's media websocket.

It plays the network side of Telnyx over real loopback sockets:
- REST (`aiohttp.web` on 127.0.0.1:0): `POST /v2/calls`, `POST /v2/calls/{id}/actions/{action}`,
  `GET /v2/call_control_applications/{id}`, Bearer auth, `{data: ...}` / `{errors: [{code, title,
  detail}]}` bodies; every request is recorded, and a repeated `command_id` for the same call is
  ignored like Telnyx does (recorded with `duplicate=True`).
- Webhooks: JSON envelopes POSTed to the daemon, signed with a real Ed25519 key pair
  (`telnyx-signature-ed25519` over `"{telnyx-timestamp}|{body}"`).
- It follows our commands: `answer` (with stream options) → `call.answered`, opens the media
  websocket (`connected`, `start`, then `media` frames in real time from a μ-law buffer),
  `streaming.started`; `hangup` → `stop` frame, `streaming.stopped`, `call.hangup`; outbound dial →
  `call.initiated`, `call.answered`, AMD webhooks per a scripted callee. Audio we send back is
  played in real time into `FakeCall.heard`; `mark` is echoed when the audio before it has played
  and `clear` drops queued audio and returns queued marks at once.

Shapes follow the documents named in `patterd/protocols/telnyx.py`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import web
from nacl.signing import SigningKey

from patterd.protocols.audio import FRAME_BYTES, ULAW_SILENCE, ulaw_to_alaw

FRAME_SECS = 0.02


@dataclass
class RecordedCommand:
    """One REST request the fake accepted (or refused, in `FakeTelnyx.attempts`)."""

    action: str  # "dial", "get_application", or the Call Control action ("answer", "hangup", ...)
    call_control_id: str
    body: dict[str, Any]
    command_id: str | None
    duplicate: bool = False  # a repeated command_id: Telnyx ignored it
    status: int = 200


@dataclass
class SentWebhook:
    """A webhook the fake delivered, with the daemon's HTTP status."""

    event_type: str
    event_id: str
    call_control_id: str
    body: bytes
    status: int


@dataclass
class Callee:
    """How the far end of an outbound call behaves."""

    answer: Literal["human", "machine", "busy", "no-answer", "reject"] = "human"
    audio: bytes = b""  # μ-law the callee says once the stream is up
    greeting_beep: bool = True  # a machine's greeting ends with a beep (greeting.ended webhooks)


@dataclass
class _Failure:
    action: str
    status: int
    times: int
    code: str
    detail: str


@dataclass
class FakeCall:
    """One call leg as the fake sees it."""

    fake: FakeTelnyx
    call_control_id: str
    direction: Literal["incoming", "outgoing"]
    from_: str
    to: str
    call_leg_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "parked"
    client_state: str | None = None
    stream_id: str = ""
    stream_url: str = ""
    stream_refused: int | None = None  # HTTP status when the daemon refused the media websocket
    recording: bool = False
    hangup_cause: str | None = None
    heard: bytearray = field(default_factory=bytearray)  # our audio, as played to the caller
    marks: list[str] = field(default_factory=list)  # marks echoed back to the daemon
    frames_from_daemon: list[dict[str, Any]] = field(default_factory=list)
    clears: int = 0
    media_times: list[float] = field(default_factory=list)  # loop.time() of each media frame from the daemon
    clear_times: list[float] = field(default_factory=list)  # loop.time() of each clear frame
    speech_started: list[float] = field(default_factory=list)  # loop.time() when each `say` began going out
    violations: list[str] = field(default_factory=list)  # frames from the daemon Telnyx would not accept
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    stream_open: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _to_send: bytearray = field(default_factory=bytearray)  # caller audio not streamed yet
    _bytes_queued: int = 0  # caller audio queued by `say`, in total
    _bytes_sent: int = 0  # caller audio taken from `_to_send`, in total
    _speech_offsets: list[int] = field(default_factory=list)  # where each `say` starts in the stream
    _playback: list[bytes | str] = field(default_factory=list)  # our audio (bytes) and marks (str) queued
    _playback_ready: asyncio.Event = field(default_factory=asyncio.Event)
    _ws: aiohttp.ClientWebSocketResponse | None = None
    _seq: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one webhook at a time, in order
    _command_ids: set[str] = field(default_factory=set)

    def say(self, ulaw: bytes) -> None:
        """Queue caller audio (μ-law) for the media stream."""
        if ulaw:
            self._speech_offsets.append(self._bytes_queued)
            self._bytes_queued += len(ulaw)
        self._to_send.extend(ulaw)

    async def wait_sent(self, timeout: float = 30.0) -> None:
        """Wait until every byte `say` queued has gone out on the media stream."""
        await self.fake._wait(
            lambda: self._bytes_sent >= self._bytes_queued,
            timeout,
            f"caller audio sent on {self.call_control_id}",
        )

    async def press(self, digit: str) -> None:
        """The caller presses a key: a `dtmf` media frame and a `call.dtmf.received` webhook."""
        await self._send_frame({"event": "dtmf", "occurred_at": _now_iso(), "dtmf": {"digit": digit}})
        await self.fake.send_event(self, "call.dtmf.received", {"digit": digit})

    async def send_error_frame(
        self, code: int = 100002, title: str = "unknown_error", detail: str = ""
    ) -> None:
        """An `error` frame on the media stream."""
        await self._send_frame(
            {"event": "error", "payload": {"code": code, "title": title, "detail": detail}}
        )

    async def send_raw(self, text: str) -> None:
        """Anything at all on the media websocket (malformed-frame tests)."""
        assert self._ws is not None, "media stream is not open"
        await self._ws.send_str(text)

    async def hangup(self, cause: str = "normal_clearing") -> None:
        """The far end hangs up: stream `stop`, `streaming.stopped`, `call.hangup` with `cause`."""
        await self.fake._end_call(self, cause, source="caller" if self.direction == "incoming" else "callee")

    async def wait_heard(self, nbytes: int, timeout: float = 10.0) -> bytes:
        """Wait until at least `nbytes` of our audio has been played to the caller."""
        await self.fake._wait(
            lambda: len(self.heard) >= nbytes, timeout, f"{nbytes} bytes heard on {self.call_control_id}"
        )
        return bytes(self.heard)

    async def wait_marks(self, count: int, timeout: float = 10.0) -> list[str]:
        """Wait until `count` marks have been echoed."""
        await self.fake._wait(
            lambda: len(self.marks) >= count, timeout, f"{count} marks on {self.call_control_id}"
        )
        return list(self.marks)

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        if self._ws is None or self._ws.closed:
            return
        self._seq += 1
        await self._ws.send_str(
            json.dumps({**frame, "sequence_number": str(self._seq), "stream_id": self.stream_id})
        )


class FakeTelnyx:
    """The fake Telnyx; use as `async with FakeTelnyx(webhook_base=...) as fake:`."""

    def __init__(
        self,
        *,
        api_key: str = "KEY0123456789ABCDEF_test",
        connection_id: str = "1494404757140276705",
        webhook_base: str | None = None,
        media_encoding: Literal["PCMU", "PCMA"] = "PCMU",
        trailing_silence: bool = True,
    ) -> None:
        self.api_key = api_key
        self.connection_id = connection_id
        self.webhook_base = webhook_base  # the daemon, e.g. "http://127.0.0.1:8123"
        self.media_encoding = media_encoding
        self.trailing_silence = (
            trailing_silence  # keep streaming silence after the caller's audio, like a phone line
        )
        self.signing_key = SigningKey.generate()
        self.public_key_b64 = base64.b64encode(bytes(self.signing_key.verify_key)).decode()
        self.commands: list[RecordedCommand] = []  # accepted requests, in order
        self.attempts: list[RecordedCommand] = []  # every request, including refused and failed ones
        self.webhooks: list[SentWebhook] = []
        self.calls: dict[str, FakeCall] = {}
        self.callees: dict[str, Callee] = {}
        self._failures: list[_Failure] = []
        self._dials: dict[str, str] = {}  # dial command_id → call_control_id
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.base_url = ""

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> FakeTelnyx:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v2/calls", self._dial)
        app.router.add_post("/v2/calls/{ccid}/actions/{action}", self._action)
        app.router.add_get("/v2/call_control_applications/{id}", self._application)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for call in self.calls.values():
            if call._ws is not None:
                await call._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ scripting

    def fail(self, action: str, status: int, *, times: int = 1, code: str = "", detail: str = "") -> None:
        """The next `times` requests for `action` ("dial", "answer", ...) fail with `status`."""
        default = {401: ("10009", "Authentication failed"), 429: ("10011", "Too many requests")}
        dcode, ddetail = default.get(status, ("10007", "Unexpected error"))
        self._failures.append(_Failure(action, status, times, code or dcode, detail or ddetail))

    def callee(self, to: str, script: Callee) -> None:
        """Script the far end of outbound calls to `to`."""
        self.callees[to] = script

    async def place_call(self, from_: str, to: str, *, audio: bytes = b"") -> FakeCall:
        """An inbound call rings: `call.initiated` (incoming, parked) goes to the daemon."""
        call = FakeCall(self, f"v3:{uuid.uuid4().hex}", "incoming", from_, to)
        call.say(audio)
        self.calls[call.call_control_id] = call
        await self.send_event(call, "call.initiated", {"state": "parked", "calling_party_type": "pstn"})
        return call

    # ------------------------------------------------------------ webhooks

    def envelope(
        self, call: FakeCall, event_type: str, extra: dict[str, Any], event_id: str | None = None
    ) -> bytes:
        """A Call Control webhook body as Telnyx sends it."""
        payload = {
            "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id,
            "client_state": call.client_state,
            "connection_id": self.connection_id,
            "from": call.from_,
            "to": call.to,
            "direction": call.direction,
            "start_time": _now_iso(),
            **extra,
        }
        data = {
            "event_type": event_type,
            "id": event_id or str(uuid.uuid4()),
            "occurred_at": _now_iso(),
            "payload": payload,
            "record_type": "event",
        }
        return json.dumps(
            {"data": data, "meta": {"attempt": 1, "delivered_to": self._webhook_url()}}
        ).encode()

    def sign(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """Telnyx's signature headers for `body`."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.signing_key.sign(ts.encode() + b"|" + body).signature
        return {
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": ts,
            "content-type": "application/json",
        }

    async def send_event(
        self,
        call: FakeCall,
        event_type: str,
        extra: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> SentWebhook:
        """Deliver one signed webhook about `call` (headers=... replaces the signature headers)."""
        body = self.envelope(call, event_type, extra or {}, event_id)
        return await self.post_webhook(body, timestamp=timestamp, headers=headers, call=call)

    async def post_webhook(
        self,
        body: bytes,
        *,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
        call: FakeCall | None = None,
    ) -> SentWebhook:
        """POST a webhook body to the daemon, signed now (or at `timestamp`) unless `headers` is given."""
        assert self._session is not None
        sent_headers = headers if headers is not None else self.sign(body, timestamp)
        lock = call._lock if call is not None else asyncio.Lock()
        async with lock, self._session.post(self._webhook_url(), data=body, headers=sent_headers) as resp:
            status = resp.status
        data = json.loads(body)["data"]
        sent = SentWebhook(
            data["event_type"], data["id"], data["payload"].get("call_control_id", ""), body, status
        )
        self.webhooks.append(sent)
        self._notify()
        return sent

    async def resend(self, sent: SentWebhook, *, timestamp: int | None = None) -> SentWebhook:
        """Telnyx retrying a delivery: the same body (same event id), signed anew."""
        return await self.post_webhook(
            sent.body, timestamp=timestamp, call=self.calls.get(sent.call_control_id)
        )

    def _webhook_url(self, url: str | None = None) -> str:
        path = urlsplit(url).path if url else "/webhooks/telnyx/voice"
        return (self.webhook_base or "http://127.0.0.1:9").rstrip("/") + path

    # ------------------------------------------------------------ REST

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _injected(self, action: str) -> web.Response | None:
        for failure in self._failures:
            if failure.action == action and failure.times > 0:
                failure.times -= 1
                return _errors(failure.status, failure.code, "Error", failure.detail)
        return None

    async def _read(
        self, request: web.Request, action: str, ccid: str
    ) -> tuple[dict[str, Any], web.Response | None]:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            body = {}
        record = RecordedCommand(action, ccid, body, body.get("command_id"))
        self.attempts.append(record)
        refusal: web.Response | None = None
        if not self._authorized(request):
            refusal = _errors(
                401, "10009", "Authentication failed", "Could not understand the provided credentials."
            )
        else:
            refusal = self._injected(action)
        record.status = refusal.status if refusal is not None else 200
        self._notify()
        return body, refusal

    async def _application(self, request: web.Request) -> web.Response:
        app_id = request.match_info["id"]
        _, refusal = await self._read(request, "get_application", "")
        if refusal is not None:
            return refusal
        if app_id != self.connection_id:
            return _errors(
                404, "10005", "Resource not found", "The requested resource or URL could not be found."
            )
        self.commands.append(RecordedCommand("get_application", "", {}, None))
        data = {
            "id": app_id,
            "record_type": "call_control_application",
            "application_name": "patterd-test",
            "active": True,
            "webhook_event_url": self._webhook_url(),
            "webhook_api_version": "2",
        }
        return web.json_response({"data": data})

    async def _dial(self, request: web.Request) -> web.Response:
        body, refusal = await self._read(request, "dial", "")
        if refusal is not None:
            return refusal
        for key in ("connection_id", "to", "from"):
            if not body.get(key):
                return _errors(422, "10015", "Invalid value", f"The '{key}' parameter is required.")
        if body["connection_id"] != self.connection_id:
            return _errors(
                422, "10015", "Invalid connection_id", f"connection_id {body['connection_id']} is not yours."
            )
        command_id = body.get("command_id")
        if command_id and command_id in self._dials:
            self.commands.append(
                RecordedCommand("dial", self._dials[command_id], body, command_id, duplicate=True)
            )
            self._notify()
            return web.json_response({"data": self._call_data(self.calls[self._dials[command_id]])})
        call = FakeCall(
            self, f"v3:{uuid.uuid4().hex}", "outgoing", body["from"], body["to"], state="bridging"
        )
        call.client_state = body.get("client_state")
        self.calls[call.call_control_id] = call
        if command_id:
            self._dials[command_id] = call.call_control_id
        self.commands.append(RecordedCommand("dial", call.call_control_id, body, command_id))
        self._notify()
        self._spawn(self._outbound_flow(call, body))
        return web.json_response({"data": self._call_data(call)})

    def _call_data(self, call: FakeCall) -> dict[str, Any]:
        return {
            "call_control_id": call.call_control_id,
            "call_leg_id": call.call_leg_id,
            "call_session_id": call.call_session_id,
            "is_alive": call.state not in ("hangup",),
            "record_type": "call",
        }

    async def _action(self, request: web.Request) -> web.Response:
        ccid = unquote(request.match_info["ccid"])
        action = request.match_info["action"]
        body, refusal = await self._read(request, action, ccid)
        if refusal is not None:
            return refusal
        call = self.calls.get(ccid)
        if call is None:
            return _errors(404, "10005", "Resource not found", f"No call with call_control_id {ccid}.")
        command_id = body.get("command_id")
        duplicate = bool(command_id) and command_id in call._command_ids
        self.commands.append(RecordedCommand(action, ccid, body, command_id, duplicate=duplicate))
        self._notify()
        if duplicate:
            return web.json_response({"data": {"result": "ok"}})  # Telnyx ignores the repeat
        if call.state == "hangup":
            return _errors(
                422,
                "90018",
                "Call has already ended",
                "This call is no longer active and can't receive commands.",
            )
        if command_id:
            call._command_ids.add(command_id)
        if body.get("client_state"):
            call.client_state = body["client_state"]
        match action:
            case "answer":
                if call.direction != "incoming" or call.state != "parked":
                    return _errors(
                        422, "90034", "Call already answered", "The call has already been answered."
                    )
                call.state = "answering"
                self._spawn(self._answer_flow(call, body))
            case "reject":
                call.state = "hangup"
                self._spawn(self._hangup_webhooks(call, "call_rejected", "callee"))
            case "hangup":
                self._spawn(
                    self._end_call(
                        call, "normal_clearing", "callee" if call.direction == "incoming" else "caller"
                    )
                )
            case "streaming_start":
                self._spawn(self._open_media(call, body["stream_url"]))
            case "record_start":
                call.recording = True
            case "record_stop":
                if call.recording:
                    call.recording = False
                    self._spawn(self._recording_saved(call))
            case "transfer" | "send_dtmf" | "streaming_stop":
                pass  # recorded; the test asserts on the body
            case _:
                return _errors(422, "10015", "Invalid action", f"Unknown action {action}.")
        return web.json_response({"data": {"result": "ok"}})

    # ------------------------------------------------------------ call flows

    async def _answer_flow(self, call: FakeCall, body: dict[str, Any]) -> None:
        call.state = "answered"
        call.answered.set()
        await self.send_event(call, "call.answered", {"state": "answered"})
        if body.get("stream_url"):
            await self._open_media(call, body["stream_url"])

    async def _outbound_flow(self, call: FakeCall, body: dict[str, Any]) -> None:
        script = self.callees.get(call.to, Callee())
        await self.send_event(call, "call.initiated", {"state": "bridging"})
        refusal = {"busy": "user_busy", "no-answer": "timeout", "reject": "call_rejected"}.get(script.answer)
        if refusal is not None:
            call.state = "hangup"
            await self._hangup_webhooks(call, refusal, "callee")
            return
        call.state = "answered"
        call.answered.set()
        call.say(script.audio)
        await self.send_event(call, "call.answered", {"state": "answered"})
        if body.get("stream_url"):
            self._spawn(self._open_media(call, body["stream_url"]))
        mode = body.get("answering_machine_detection")
        if mode and mode != "disabled":
            await self._amd(call, mode, script)

    async def _amd(self, call: FakeCall, mode: str, script: Callee) -> None:
        human = script.answer == "human"
        if mode == "premium":
            await self.send_event(
                call,
                "call.machine.premium.detection.ended",
                {"result": "human_residence" if human else "machine"},
            )
            if not human and script.greeting_beep:
                await self.send_event(
                    call, "call.machine.premium.greeting.ended", {"result": "beep_detected"}
                )
            return
        await self.send_event(
            call, "call.machine.detection.ended", {"result": "human" if human else "machine"}
        )
        if not human and mode in ("greeting_end", "detect_words", "detect_beep"):
            result = "beep_detected" if script.greeting_beep else "ended"
            if mode != "detect_beep" or script.greeting_beep:
                await self.send_event(call, "call.machine.greeting.ended", {"result": result})

    async def _open_media(self, call: FakeCall, stream_url: str) -> None:
        assert self._session is not None
        call.stream_url = stream_url
        call.stream_id = str(uuid.uuid4())
        base = (
            (self.webhook_base or "http://127.0.0.1:9")
            .replace("http://", "ws://")
            .replace("https://", "wss://")
        )
        parts = urlsplit(stream_url)
        url = base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            ws = await self._session.ws_connect(url)
        except aiohttp.WSServerHandshakeError as exc:
            call.stream_refused = exc.status
            call.stream_closed.set()
            await self.send_event(
                call,
                "streaming.failed",
                {"failure_reason": f"handshake {exc.status}", "stream_url": stream_url},
            )
            self._notify()
            return
        call._ws = ws
        await call._send_frame({"event": "connected", "version": "1.0.0"})
        encoding = self.media_encoding
        await call._send_frame(
            {
                "event": "start",
                "start": {
                    "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
                    "call_control_id": call.call_control_id,
                    "call_session_id": call.call_session_id,
                    "from": call.from_,
                    "to": call.to,
                    "tags": [],
                    "client_state": call.client_state,
                    "custom_parameters": {},
                    "media_format": {"encoding": encoding, "sample_rate": 8000, "channels": 1},
                },
            }
        )
        call.stream_open.set()
        self._notify()
        await self.send_event(call, "streaming.started", {"stream_url": stream_url})
        sender = asyncio.create_task(self._stream_caller_audio(call))
        player = asyncio.create_task(self._play(call))
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    call.violations.append(f"non-text websocket message from the daemon: {msg.type}")
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    call.violations.append(f"frame from the daemon is not JSON: {msg.data[:200]}")
                    continue
                call.frames_from_daemon.append(frame)
                self._on_daemon_frame(call, frame, msg.data)
        finally:
            sender.cancel()
            player.cancel()
            await asyncio.gather(sender, player, return_exceptions=True)
            call.stream_closed.set()
            self._notify()

    def _on_daemon_frame(self, call: FakeCall, frame: dict[str, Any], raw: str = "") -> None:
        match frame.get("event"):
            case "media":
                call.media_times.append(asyncio.get_running_loop().time())
                call._playback.append(base64.b64decode(frame["media"]["payload"]))
            case "mark":
                call._playback.append(str(frame["mark"]["name"]))
            case "clear":
                call.clears += 1
                call.clear_times.append(asyncio.get_running_loop().time())
                marks = [item for item in call._playback if isinstance(item, str)]
                call._playback.clear()
                self._spawn(self._echo_marks(call, marks))
        call._playback_ready.set()
        self._notify()

    async def _echo_marks(self, call: FakeCall, names: list[str]) -> None:
        for name in names:
            call.marks.append(name)
            await call._send_frame({"event": "mark", "mark": {"name": name}})
        self._notify()

    async def _play(self, call: FakeCall) -> None:
        """Play our audio to the caller at 8000 bytes/s; echo each mark when its turn comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            if not call._playback:
                call._playback_ready.clear()
                await call._playback_ready.wait()
                deadline = loop.time()
                continue
            head = call._playback[0]
            if isinstance(head, str):
                call._playback.pop(0)
                await self._echo_marks(call, [head])
                continue
            piece, rest = head[:FRAME_BYTES], head[FRAME_BYTES:]
            if rest:
                call._playback[0] = rest
            else:
                call._playback.pop(0)
            deadline += len(piece) / 8000
            await asyncio.sleep(max(0.0, deadline - loop.time()))  # pacing real-time playback
            call.heard.extend(piece)
            self._notify()

    async def _stream_caller_audio(self, call: FakeCall) -> None:
        """Send the caller's audio in 20 ms media frames, in real time."""
        loop = asyncio.get_running_loop()
        chunk = 0
        start = loop.time()
        while True:
            if call._to_send:
                if call._speech_offsets and call._speech_offsets[0] <= call._bytes_sent:
                    call._speech_offsets.pop(0)
                    call.speech_started.append(loop.time())
                frame = bytes(call._to_send[:FRAME_BYTES]).ljust(FRAME_BYTES, ULAW_SILENCE)
                call._bytes_sent += min(FRAME_BYTES, len(call._to_send))
                del call._to_send[:FRAME_BYTES]
                if not call._to_send:
                    self._notify()
            elif self.trailing_silence:
                frame = ULAW_SILENCE * FRAME_BYTES
            else:
                await asyncio.sleep(FRAME_SECS)  # pacing: poll for more scripted caller audio
                continue
            chunk += 1
            payload = ulaw_to_alaw(frame) if self.media_encoding == "PCMA" else frame
            await call._send_frame(
                {
                    "event": "media",
                    "media": {
                        "track": "inbound",
                        "chunk": str(chunk),
                        "timestamp": str((chunk - 1) * 20),
                        "payload": base64.b64encode(payload).decode(),
                    },
                }
            )
            self._notify()
            await asyncio.sleep(max(0.0, start + chunk * FRAME_SECS - loop.time()))  # pacing real time

    async def _end_call(self, call: FakeCall, cause: str, source: str) -> None:
        if call.state == "hangup":
            return
        call.state = "hangup"
        if call._ws is not None and not call._ws.closed:
            await call._send_frame({"event": "stop", "stop": {"call_control_id": call.call_control_id}})
            await call._ws.close()
            await self.send_event(call, "streaming.stopped", {"stream_url": call.stream_url})
        await self._hangup_webhooks(call, cause, source)
        if call.recording:
            call.recording = False
            await self._recording_saved(call)

    async def _hangup_webhooks(self, call: FakeCall, cause: str, source: str) -> None:
        call.hangup_cause = cause
        sip = {"normal_clearing": "200", "user_busy": "486", "call_rejected": "603", "timeout": "487"}.get(
            cause, "unspecified"
        )
        await self.send_event(
            call,
            "call.hangup",
            {"state": "hangup", "hangup_cause": cause, "hangup_source": source, "sip_hangup_cause": sip},
        )
        call.ended.set()
        self._notify()

    async def _recording_saved(self, call: FakeCall) -> None:
        rec = uuid.uuid4().hex
        await self.send_event(
            call,
            "call.recording.saved",
            {
                "channels": "dual",
                "recording_started_at": "2026-01-01T00:00:00.000Z",
                "recording_ended_at": "2026-01-01T00:00:12.500Z",
                "recording_urls": {"mp3": f"{self.base_url}/recordings/{rec}.mp3", "wav": None},
            },
        )

    # ------------------------------------------------------------ waiting

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        async def loop() -> None:
            while not predicate():
                await self._changed.wait()

        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"fake Telnyx: timed out after {timeout}s waiting for {what}") from None

    async def wait_command(
        self, action: str, call_control_id: str | None = None, timeout: float = 5.0
    ) -> RecordedCommand:
        """The first accepted `action` command (for `call_control_id`, if given), waiting for it."""

        def find() -> RecordedCommand | None:
            for cmd in self.commands:
                if cmd.action == action and (
                    call_control_id is None or cmd.call_control_id == call_control_id
                ):
                    return cmd
            return None

        await self._wait(lambda: find() is not None, timeout, f"command {action}")
        found = find()
        assert found is not None
        return found

    async def wait_webhook(
        self, event_type: str, call_control_id: str | None = None, timeout: float = 5.0
    ) -> SentWebhook:
        """The first delivered webhook of `event_type`, waiting for it."""

        def find() -> SentWebhook | None:
            for hook in self.webhooks:
                if hook.event_type == event_type and (
                    call_control_id is None or hook.call_control_id == call_control_id
                ):
                    return hook
            return None

        await self._wait(lambda: find() is not None, timeout, f"webhook {event_type}")
        found = find()
        assert found is not None
        return found

    def commands_for(self, action: str, *, include_duplicates: bool = False) -> list[RecordedCommand]:
        """Accepted commands of one action."""
        return [c for c in self.commands if c.action == action and (include_duplicates or not c.duplicate)]


def _errors(status: int, code: str, title: str, detail: str) -> web.Response:
    return web.json_response({"errors": [{"code": code, "title": title, "detail": detail}]}, status=status)


def _now_iso() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}Z"
