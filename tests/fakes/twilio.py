"""A protocol-faithful fake Twilio on loopback: the REST API patterd calls, and callers that dial patterd.

Followed: twilio.com/docs/voice/api/call-resource, /docs/voice/api/recording,
/docs/phone-numbers/api/incomingphonenumber-resource, /docs/usage/twilios-response (error JSON),
/docs/usage/webhooks/voice-webhooks (voice webhook form fields), /docs/usage/webhooks/webhooks-security
(signed with the official `twilio.request_validator.RequestValidator`), /docs/voice/twiml/stream,
/docs/voice/media-streams/websocket-messages (connected, start, media, dtmf, mark, stop; playback of
media, mark echo after playback, clear drops the buffer and echoes pending marks),
/docs/voice/answering-machine-detection (AsyncAmd callback fields).

Two cooperating pieces: `FakeTwilioRest` (aiohttp server on 127.0.0.1:0) and `FakeTwilio`, the
phone network, which places inbound calls into the daemon, answers the outbound calls the daemon
created through the REST fake, and runs each call's Media Stream as a `FakeCall`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import subprocess
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from patterd.protocols.audio import FRAME_BYTES, wav_to_ulaw8k

API_VERSION = "2010-04-01"
FRAME_SECS = 0.02
SILENCE = b"\xff" * FRAME_BYTES


def basic_auth(login: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP basic auth."""
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def spoken_ulaw(text: str, *, voice: str = "en-us", speed_wpm: int = 160) -> bytes:
    """`text` spoken by espeak-ng, as 8 kHz μ-law (for a caller that says something real)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "--stdout", text], check=True, capture_output=True
    ).stdout
    return wav_to_ulaw8k(wav)


async def _wait_until(
    cond: asyncio.Condition, predicate: Callable[[], bool], timeout: float, what: str
) -> None:
    async with cond:
        try:
            await asyncio.wait_for(cond.wait_for(predicate), timeout)
        except TimeoutError:
            raise AssertionError(f"fake Twilio: timed out after {timeout} s waiting for {what}") from None


# ====================================================================== REST


@dataclass
class RecordedRequest:
    """One request the REST fake received, as it was on the wire."""

    method: str
    path: str
    query: dict[str, str]
    form: list[tuple[str, str]]
    authorized: bool
    status: int = 0  # the HTTP status the fake answered

    def get(self, name: str) -> str | None:
        """The first value of a form field."""
        return next((v for k, v in self.form if k == name), None)

    def getall(self, name: str) -> list[str]:
        """Every value of a (repeatable) form field, in order."""
        return [v for k, v in self.form if k == name]


@dataclass
class CallResource:
    """A call the fake knows: created through Calls.json, or an inbound call placed by FakeTwilio."""

    sid: str
    to: str
    from_: str
    direction: str  # "inbound" | "outbound-api"
    status: str = "queued"
    url: str | None = None
    twiml: str | None = None
    status_callback: str | None = None
    status_callback_events: list[str] = field(default_factory=list)
    machine_detection: str | None = None
    async_amd: bool = False
    amd_callback: str | None = None
    recordings: list[dict[str, str]] = field(default_factory=list)
    updates: list[list[tuple[str, str]]] = field(default_factory=list)

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": self.direction,
            "api_version": API_VERSION,
            "uri": f"/{API_VERSION}/Accounts/{account_sid}/Calls/{self.sid}.json",
            "answered_by": None,
            "parent_call_sid": None,
        }


@dataclass
class _Fault:
    status: int
    code: int
    message: str
    path_contains: str
    times: int


class FakeTwilioRest:
    """Twilio's REST API for one account: basic auth, form bodies, Twilio-shaped JSON and errors."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, CallResource] = {}
        self.numbers: dict[str, dict[str, Any]] = {}
        self.on_call_update: Callable[[CallResource, list[tuple[str, str]]], None] | None = None
        self._faults: list[_Fault] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.api_root = f"/{API_VERSION}"  # compatible APIs (SignalWire's LaML) serve it under another root

    @property
    def base_url(self) -> str:
        """What patterd's `carrier.base_url` should be."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeTwilioRest:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTwilioRest:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- scripting

    def add_number(self, phone_number: str) -> str:
        """An IncomingPhoneNumber on the account; returns its PN sid."""
        sid = new_sid("PN")
        self.numbers[sid] = {
            "sid": sid,
            "phone_number": phone_number,
            "voice_url": None,
            "voice_method": "POST",
        }
        return sid

    def fail_next(
        self, status: int, *, times: int = 1, path_contains: str = "", code: int | None = None
    ) -> None:
        """Answer the next `times` matching requests with a Twilio error of `status`."""
        default_code, message = {
            401: (20003, "Authenticate"),
            429: (20429, "Too Many Requests"),
            500: (20500, "Internal Server Error"),
            503: (20503, "Service Unavailable"),
        }.get(status, (21000, "Bad request"))
        self._faults.append(_Fault(status, code or default_code, message, path_contains, times))

    async def wait_for_request(
        self, predicate: Callable[[RecordedRequest], bool], *, timeout: float = 5.0
    ) -> RecordedRequest:
        """The first recorded request matching `predicate` (waits for it)."""
        found: list[RecordedRequest] = []

        def match() -> bool:
            found[:] = [r for r in self.requests if predicate(r)][:1]
            return bool(found)

        await _wait_until(self._changed, match, timeout, "a matching REST request")
        return found[0]

    async def wait_for_call(self, *, timeout: float = 5.0, index: int = 0) -> CallResource:
        """The `index`-th call created through Calls.json (waits for it)."""

        def outbound() -> list[CallResource]:
            return [c for c in self.calls.values() if c.direction == "outbound-api"]

        await _wait_until(self._changed, lambda: len(outbound()) > index, timeout, "an outbound call")
        return outbound()[index]

    # ---------------------------------------------------------------- server

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return web.json_response(body, status=status)

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return False
        return (
            scheme.lower() == "basic"
            and login == self.account_sid
            and secrets.compare_digest(password, self.auth_token)
        )

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        form = parse_qsl(body, keep_blank_values=True) if request.method == "POST" else []
        record = RecordedRequest(
            request.method, request.path, dict(request.query), form, self._authorized(request)
        )
        self.requests.append(record)
        response = self._answer(request, record)
        record.status = response.status
        async with self._changed:
            self._changed.notify_all()
        return response

    def _answer(self, request: web.Request, record: RecordedRequest) -> web.Response:
        for fault in self._faults:
            if fault.times > 0 and fault.path_contains in record.path:
                fault.times -= 1
                return self._error(fault.status, fault.code, fault.message)
        if not record.authorized:
            return self._error(401, 20003, "Authenticate")
        prefix = f"{self.api_root}/Accounts/{self.account_sid}"
        not_found = self._error(404, 20404, f"The requested resource {record.path} was not found")
        if not record.path.startswith(prefix):
            return not_found
        rest = record.path[len(prefix) :]
        parts = rest.strip("/").split("/")
        if rest == ".json" and request.method == "GET":
            return web.json_response(
                {"sid": self.account_sid, "status": "active", "friendly_name": "fake", "type": "Full"}
            )
        if rest == "/Calls.json" and request.method == "POST":
            return self._create_call(record)
        if (
            len(parts) == 2
            and parts[0] == "Calls"
            and parts[1].endswith(".json")
            and request.method == "POST"
        ):
            call = self.calls.get(parts[1].removesuffix(".json"))
            return not_found if call is None else self._update_call(call, record)
        if (
            len(parts) == 3
            and parts[0] == "Calls"
            and parts[2] == "Recordings.json"
            and request.method == "POST"
        ):
            call = self.calls.get(parts[1])
            if call is None:
                return not_found
            recording = {
                "sid": new_sid("RE"),
                "call_sid": call.sid,
                "account_sid": self.account_sid,
                "status": "in-progress",
                "channels": "1",
                "source": "StartCallRecording",
                "recording_status_callback": record.get("RecordingStatusCallback") or "",
            }
            call.recordings.append(recording)
            return web.json_response(recording, status=201)
        if rest == "/IncomingPhoneNumbers.json" and request.method == "GET":
            wanted = record.query.get("PhoneNumber")
            found = [n for n in self.numbers.values() if wanted in (None, n["phone_number"])]
            return web.json_response({"incoming_phone_numbers": found, "page": 0, "page_size": 50})
        if len(parts) == 2 and parts[0] == "IncomingPhoneNumbers" and request.method == "POST":
            number = self.numbers.get(parts[1].removesuffix(".json"))
            if number is None:
                return not_found
            for key, name in (("VoiceUrl", "voice_url"), ("VoiceMethod", "voice_method")):
                if record.get(key) is not None:
                    number[name] = record.get(key)
            return web.json_response(number)
        return not_found

    def _create_call(self, record: RecordedRequest) -> web.Response:
        to, from_ = record.get("To"), record.get("From")
        if not to:
            return self._error(400, 21201, "No 'To' number is specified")
        if not from_:
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not record.get("Url") and not record.get("Twiml"):
            return self._error(400, 21205, "Url parameter is required.")
        call = CallResource(
            sid=new_sid("CA"),
            to=to,
            from_=from_,
            direction="outbound-api",
            url=record.get("Url"),
            twiml=record.get("Twiml"),
            status_callback=record.get("StatusCallback"),
            status_callback_events=record.getall("StatusCallbackEvent"),
            machine_detection=record.get("MachineDetection"),
            async_amd=record.get("AsyncAmd") == "true",
            amd_callback=record.get("AsyncAmdStatusCallback"),
        )
        self.calls[call.sid] = call
        return web.json_response(call.resource(self.account_sid), status=201)

    def _update_call(self, call: CallResource, record: RecordedRequest) -> web.Response:
        if call.status in ("completed", "canceled", "failed", "busy", "no-answer") and record.form:
            return self._error(400, 21220, "Call is not in-progress. Cannot redirect.")
        call.updates.append(record.form)
        if record.get("Status") in ("completed", "canceled"):
            call.status = record.get("Status") or "completed"
        if self.on_call_update is not None:
            self.on_call_update(call, record.form)
        return web.json_response(call.resource(self.account_sid))


# ====================================================================== TwiML and the phone network


@dataclass(frozen=True)
class Twiml:
    """What a TwiML answer asked for (the parts patterd uses)."""

    raw: str
    verbs: tuple[str, ...]
    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    dial: str | None = None

    @property
    def rejected(self) -> bool:
        return "Reject" in self.verbs


def parse_twiml(text: str) -> Twiml:
    """Parse a `<Response>`; raises AssertionError for anything Twilio would refuse."""
    root = ET.fromstring(text)
    assert root.tag == "Response", f"TwiML root is <{root.tag}>, expected <Response>"
    verbs = tuple(child.tag for child in root)
    stream = root.find("Connect/Stream")
    url, params = None, {}
    if stream is not None:
        url = stream.get("url")
        assert url and url.startswith(("wss://", "ws://")), f"<Stream url={url!r}>: expected a wss:// URL"
        for param in stream.findall("Parameter"):
            params[param.get("name") or ""] = param.get("value") or ""
    dial = root.find("Dial")
    return Twiml(text, verbs, url, params, (dial.text or "").strip() if dial is not None else None)


class FakeTwilio:
    """Twilio's side of calls with a patterd daemon: signed webhooks, TwiML, Media Streams callers."""

    def __init__(
        self,
        daemon_url: str,
        public_host: str,
        *,
        rest: FakeTwilioRest | None = None,
        account_sid: str | None = None,
        auth_token: str | None = None,
        public_scheme: str = "https",
    ) -> None:
        self.daemon_url = daemon_url.rstrip("/")
        self.public_host = public_host
        self.public_scheme = public_scheme
        self.rest = rest
        self.account_sid = account_sid or (rest.account_sid if rest else new_sid("AC"))
        self.auth_token = auth_token or (rest.auth_token if rest else secrets.token_hex(16))
        self.validator = RequestValidator(self.auth_token)
        self.calls: dict[str, FakeCall] = {}
        self._session: aiohttp.ClientSession | None = None
        if rest is not None:
            rest.on_call_update = self._on_rest_update

    async def __aenter__(self) -> FakeTwilio:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for call in list(self.calls.values()):
            await call.close()
            await call.settle()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with FakeTwilio(...)`"
        return self._session

    def public_url(self, path: str) -> str:
        return f"{self.public_scheme}://{self.public_host}{path}"

    def local_url(self, public_url: str) -> str:
        """Where a public URL the daemon handed out really lives (its loopback address)."""
        parts = urlsplit(public_url)
        assert parts.netloc == self.public_host, (
            f"URL {public_url!r} is not on the public host {self.public_host!r}"
        )
        local = urlsplit(self.daemon_url)
        scheme = {"https": "http", "http": "http", "wss": "ws", "ws": "ws"}[parts.scheme]
        if scheme == "ws":
            scheme = "wss" if local.scheme == "https" else "ws"
        elif local.scheme == "https":
            scheme = "https"
        return urlunsplit((scheme, local.netloc, parts.path, parts.query, ""))

    def sign(self, public_url: str, params: dict[str, str] | None) -> str:
        return str(self.validator.compute_signature(public_url, params or {}))

    async def post_webhook(
        self, public_url: str, params: dict[str, str], *, signature: str | None = "auto"
    ) -> tuple[int, str]:
        """POST form params to the daemon as Twilio would; `signature=None` omits the header."""
        headers = {"User-Agent": "TwilioProxy/1.1", "Content-Type": "application/x-www-form-urlencoded"}
        if signature == "auto":
            signature = self.sign(public_url, params)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        async with self.session.post(self.local_url(public_url), data=params, headers=headers) as resp:
            return resp.status, await resp.text()

    def _call_params(self, call: FakeCall, status: str) -> dict[str, str]:
        return {
            "CallSid": call.call_sid,
            "AccountSid": self.account_sid,
            "From": call.from_,
            "To": call.to,
            "Caller": call.from_,
            "Called": call.to,
            "CallStatus": status,
            "Direction": call.direction,
            "ApiVersion": API_VERSION,
        }

    async def _fetch_twiml(
        self, call: FakeCall, public_url: str, status: str, signature: str | None
    ) -> FakeCall:
        call.webhook_status, body = await self.post_webhook(
            public_url, self._call_params(call, status), signature=signature
        )
        if call.webhook_status == 200:
            call.twiml = parse_twiml(body)
        self.calls[call.call_sid] = call
        return call

    async def inbound_call(
        self,
        from_: str = "+15551230001",
        to: str = "+15550001234",
        *,
        voice_path: str = "/webhooks/twilio/voice",
        signature: str | None = "auto",
        connect: bool = True,
        continuous: bool = True,
    ) -> FakeCall:
        """Ring the daemon: POST the voice webhook; if it answers <Connect><Stream>, open the stream."""
        call = FakeCall(self, new_sid("CA"), from_, to, "inbound", continuous=continuous)
        call.status_callback = self.public_url("/webhooks/twilio/status")
        if self.rest is not None:
            self.rest.calls[call.call_sid] = CallResource(
                call.call_sid, to, from_, "inbound", status="ringing"
            )
        await self._fetch_twiml(call, self.public_url(voice_path), "ringing", signature)
        if connect and call.twiml is not None and call.twiml.stream_url:
            await call.connect_media()
        return call

    async def answer_outbound(
        self, resource: CallResource | None = None, *, connect: bool = True, continuous: bool = True
    ) -> FakeCall:
        """The callee picks up a call the daemon created via Calls.json: fetch its Url, open the stream."""
        if resource is None:
            assert self.rest is not None, "answer_outbound needs the FakeTwilioRest the daemon dials through"
            resource = await self.rest.wait_for_call()
        assert resource.url, f"call {resource.sid} has no Url to fetch TwiML from"
        resource.status = "in-progress"
        call = FakeCall(
            self, resource.sid, resource.from_, resource.to, "outbound-api", continuous=continuous
        )
        call.status_callback = resource.status_callback
        call.amd_callback = resource.amd_callback
        await self._fetch_twiml(call, resource.url, "in-progress", "auto")
        if connect and call.twiml is not None and call.twiml.stream_url:
            await call.connect_media()
        return call

    def _on_rest_update(self, resource: CallResource, form: list[tuple[str, str]]) -> None:
        call = self.calls.get(resource.sid)
        if call is None:
            return
        fields = dict(form)
        if fields.get("Status") in ("completed", "canceled"):
            call.background(call.remote_end(fields["Status"]))
        elif "Twiml" in fields:  # new TwiML replaces <Connect><Stream>: the stream stops
            call.transferred_to = parse_twiml(fields["Twiml"]).dial
            call.background(call.remote_end(None))


class FakeCall:
    """One call's Media Stream as Twilio runs it: caller audio out in real time, agent audio played in real time."""

    def __init__(
        self, net: FakeTwilio, call_sid: str, from_: str, to: str, direction: str, *, continuous: bool = True
    ) -> None:
        self.net = net
        self.call_sid = call_sid
        self.from_ = from_
        self.to = to
        self.direction = direction
        self.continuous = continuous  # real Twilio streams silence between words; False sends only speech
        self.stream_sid = new_sid("MZ")
        self.webhook_status = 0
        self.twiml: Twiml | None = None
        self.status_callback: str | None = None
        self.amd_callback: str | None = None
        self.transferred_to: str | None = None
        # what the daemon sent us, with loop.time() stamps
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.media_frame_sizes: list[int] = []
        self.media_times: list[float] = []
        self.first_audio_at: float | None = None
        self.clears: list[float] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.played = bytearray()  # agent audio the caller has heard, in order
        self.speech_started: list[float] = []  # when each `say` began going out
        self.close_code: int | None = None
        self.violations: list[str] = []  # messages Twilio would not accept
        self.closed = False
        self.handshake_status: int | None = None  # HTTP status when the websocket upgrade was refused
        # playback state (Twilio's buffer)
        self._buffer = bytearray()
        self._queued_total = 0
        self._played_total = 0
        self._pending_marks: deque[tuple[int, str]] = deque()
        self._audio_ready = asyncio.Event()
        # sending state
        self._outgoing: deque[bytes] = deque()
        self._outgoing_done: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._frames_sent = 0
        self._frames_queued = 0
        self._speech_marks: deque[int] = deque()  # frame index where each `say` begins
        self._t0 = 0.0
        self._sequence = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.Future[None]] = []  # playback and caller-audio pacing
        self._loop = asyncio.get_running_loop()

    @property
    def twiml_parameters(self) -> dict[str, str]:
        return dict(self.twiml.parameters) if self.twiml else {}

    def background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "a condition"
    ) -> None:
        """Wait (bounded) until `predicate()` holds; re-checked whenever the stream changes."""
        await _wait_until(self._changed, predicate, timeout, what)

    # ---------------------------------------------------------------- the stream

    async def connect_media(
        self, *, signature: str | None = "auto", custom_parameters: dict[str, str] | None = None
    ) -> None:
        """Open the <Stream> websocket (signed like Twilio signs it) and send `connected` and `start`."""
        assert self.twiml is not None and self.twiml.stream_url, "no <Connect><Stream> to follow"
        public = self.twiml.stream_url
        headers = self.handshake_headers(public, signature)
        try:
            self._ws = await self.net.session.ws_connect(
                self.net.local_url(public), headers=headers, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            self.handshake_status = exc.status
            self.closed = True
            return
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"}, sequenced=False)
        params = self.twiml.parameters if custom_parameters is None else custom_parameters
        await self._send(
            {
                "event": "start",
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": self.net.account_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )
        self._t0 = self._loop.time()
        self.background(self._reader())
        self._timers = [asyncio.ensure_future(self._player()), asyncio.ensure_future(self._pump())]

    def handshake_headers(self, public_url: str, signature: str | None) -> dict[str, str]:
        """The websocket upgrade's headers: Twilio signs it like a webhook (`signature=None` omits it)."""
        headers = {"User-Agent": "Twilio.TmeWs/1.0"}
        if signature == "auto":
            signature = self.net.sign(public_url, None)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        return headers

    async def _send(self, message: dict[str, Any], *, sequenced: bool = True) -> None:
        if self._ws is None or self._ws.closed:
            return
        if sequenced:
            self._sequence += 1
            message = {**message, "sequenceNumber": str(self._sequence)}
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):  # the daemon closed the socket
                await self._ws.send_str(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        """Send a frame as is (malformed-frame tests)."""
        assert self._ws is not None
        async with self._send_lock:
            await self._ws.send_str(text)

    async def say(self, ulaw: bytes, *, wait: bool = True) -> None:
        """Speak: queue caller audio; it goes out as 20 ms media frames in real time (awaits the last frame)."""
        assert self._ws is not None and not self._ws.closed, "the media stream is not open"
        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
        if frames and len(frames[-1]) < FRAME_BYTES:
            frames[-1] = frames[-1] + b"\xff" * (FRAME_BYTES - len(frames[-1]))
        done: asyncio.Future[None] = self._loop.create_future()
        first = self._frames_queued
        self._outgoing.extend(frames)
        self._frames_queued += len(frames)
        self._outgoing_done.append((self._frames_queued, done))
        self._speech_marks.append(first)
        if wait:
            await done

    async def send_silence(self, ms: int) -> None:
        """Queue `ms` of caller silence (for a stream that is not continuous)."""
        await self.say(b"\xff" * (8 * ms))

    async def send_dtmf(self, digit: str) -> None:
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        """The caller hangs up: `stop`, then the socket closes."""
        await self._end_stream()
        await self.close()

    async def remote_end(self, status: str | None) -> None:
        """Twilio ends the stream because the call was hung up (status) or redirected (None) over REST."""
        await self._end_stream()
        await self.close()
        if status is not None and self.status_callback:
            # Like Twilio, a status callback the daemon cannot take (it was just killed, or is stopping)
            # is a failed delivery, not an error of the call: this runs in a background task nobody awaits.
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self.post_status(status)

    async def _end_stream(self) -> None:
        await self._send(
            {
                "event": "stop",
                "stop": {"accountSid": self.net.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    async def close(self) -> None:
        """Close the media websocket from Twilio's side (no `stop`)."""
        for task in self._timers:
            if task is not asyncio.current_task():
                task.cancel()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        self.closed = True
        await self._notify()

    async def settle(self, timeout: float = 2.0) -> None:
        """Let background work (reader, REST-triggered hangups) finish; cancel what is left."""
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # ---------------------------------------------------------------- callbacks Twilio POSTs

    async def post_status(
        self, status: str = "completed", *, duration_secs: int = 1, url: str | None = None
    ) -> int:
        """The status callback (signed), e.g. CallStatus=completed after the call."""
        target = url or self.status_callback
        assert target, "no StatusCallback for this call"
        params = self.net._call_params(self, status)
        params.update({"CallDuration": str(duration_secs), "Timestamp": "Mon, 01 Jan 2026 00:00:00 +0000"})
        code, _ = await self.net.post_webhook(target, params)
        return code

    async def post_amd(self, answered_by: str = "machine_end_beep", *, url: str | None = None) -> int:
        """The AsyncAmd callback: AnsweredBy = human, machine_start, machine_end_beep, ..."""
        target = url or self.amd_callback
        assert target, "this call asked for no AsyncAmdStatusCallback"
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.net.account_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": "2400",
        }
        code, _ = await self.net.post_webhook(target, params)
        return code

    async def post_recording(self, url: str, recording_url: str, *, duration_secs: int = 3) -> int:
        params = {
            "AccountSid": self.net.account_sid,
            "CallSid": self.call_sid,
            "RecordingSid": new_sid("RE"),
            "RecordingUrl": recording_url,
            "RecordingStatus": "completed",
            "RecordingDuration": str(duration_secs),
            "RecordingChannels": "1",
            "RecordingSource": "StartCallRecording",
        }
        code, _ = await self.net.post_webhook(url, params)
        return code

    # ---------------------------------------------------------------- tasks

    async def _pump(self) -> None:
        """Caller audio out: one frame every 20 ms on a fixed schedule, silence when idle if continuous."""
        tick = 0
        while self._ws is not None and not self._ws.closed:
            delay = self._t0 + tick * FRAME_SECS - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tick += 1
            if self._outgoing:
                frame = self._outgoing.popleft()
                if self._speech_marks and self._speech_marks[0] == self._frames_sent:
                    self._speech_marks.popleft()
                    self.speech_started.append(self._loop.time())
                self._frames_sent += 1
            elif self.continuous:
                frame = SILENCE
            else:
                continue
            await self._send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(tick),
                        "timestamp": str(int((tick - 1) * FRAME_SECS * 1000)),
                        "payload": base64.b64encode(frame).decode(),
                    },
                }
            )
            while self._outgoing_done and self._outgoing_done[0][0] <= self._frames_sent:
                _, done = self._outgoing_done.popleft()
                if not done.done():
                    done.set_result(None)

    async def _reader(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = self._loop.time()
            try:
                data = json.loads(msg.data)
                if data.get("event") == "media":
                    payload = base64.b64decode(data["media"]["payload"], validate=True)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.violations.append(f"malformed message from the daemon ({exc}): {msg.data[:200]}")
                continue
            self.received.append((now, data))
            event = data.get("event")
            if data.get("streamSid") != self.stream_sid:
                self.violations.append(
                    f"message for stream {data.get('streamSid')!r}, expected {self.stream_sid!r}"
                )
            if event == "media":
                self.media_frame_sizes.append(len(payload))
                self.media_times.append(now)
                if self.first_audio_at is None:
                    self.first_audio_at = now
                self._buffer += payload
                self._queued_total += len(payload)
                self._audio_ready.set()
            elif event == "mark":
                name = str((data.get("mark") or {}).get("name", ""))
                if self._played_total >= self._queued_total:
                    await self._echo_mark(name)  # nothing buffered: played already
                else:
                    self._pending_marks.append((self._queued_total, name))
            elif event == "clear":
                self.clears.append(now)
                self._buffer.clear()
                self._queued_total = self._played_total
                while self._pending_marks:
                    await self._echo_mark(self._pending_marks.popleft()[1])
            else:
                self.violations.append(f"unexpected message from the daemon: {msg.data[:200]}")
            await self._notify()
        self.close_code = self._ws.close_code
        self.closed = True
        self._audio_ready.set()
        await self._notify()

    async def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append((self._loop.time(), name))
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _player(self) -> None:
        """Twilio's playback: 160 bytes every 20 ms from the buffer; marks echoed as playback passes them."""
        start = self._loop.time()
        played_frames = 0
        while not self.closed:
            if not self._buffer:
                self._audio_ready.clear()
                await self._audio_ready.wait()
                start = self._loop.time()
                played_frames = 0
                continue
            chunk = bytes(self._buffer[:FRAME_BYTES])
            del self._buffer[:FRAME_BYTES]
            self.played += chunk
            self._played_total += len(chunk)
            while self._pending_marks and self._pending_marks[0][0] <= self._played_total:
                await self._echo_mark(self._pending_marks.popleft()[1])
            await self._notify()
            played_frames += 1
            delay = start + played_frames * FRAME_SECS - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    # ---------------------------------------------------------------- what tests read

    def messages(self, event: str) -> list[dict[str, Any]]:
        """Every message of one event type the daemon sent."""
        return [m for _, m in self.received if m.get("event") == event]

    async def wait_for_audio(self, n_bytes: int = 1, *, played: bool = False, timeout: float = 5.0) -> None:
        """Until the daemon sent (or, with `played`, the caller heard) at least `n_bytes` of agent audio."""

        def got() -> int:
            return len(self.played) if played else sum(self.media_frame_sizes)

        await self.wait_until(
            lambda: got() >= n_bytes, timeout=timeout, what=f"{n_bytes} bytes of agent audio"
        )

    async def wait_for_mark(self, name: str, *, timeout: float = 5.0) -> float:
        """Until the mark `name` was echoed; returns when."""
        await self.wait_until(
            lambda: any(n == name for _, n in self.marks_echoed), timeout=timeout, what=f"mark {name!r}"
        )
        return next(t for t, n in self.marks_echoed if n == name)

    async def wait_for_clear(self, *, timeout: float = 5.0) -> float:
        await self.wait_until(lambda: bool(self.clears), timeout=timeout, what="a clear message")
        return self.clears[0]

    async def wait_closed(self, *, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: self.closed, timeout=timeout, what="the media websocket to close")

    @property
    def buffered_bytes(self) -> int:
        """Agent audio Twilio holds but has not played yet."""
        return len(self._buffer)


__all__: Sequence[str] = (
    "CallResource",
    "FakeCall",
    "FakeTwilio",
    "FakeTwilioRest",
    "RecordedRequest",
    "Twiml",
    "new_sid",
    "parse_twiml",
    "spoken_ulaw",
)
