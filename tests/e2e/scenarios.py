"""A carrier-neutral driver for end-to-end phone-call scenarios: one adapter per carrier fake, same verbs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from patterd.protocols import telnyx as telnyx_proto
from tests.fakes.openai_realtime import FakeRealtimeServer
from tests.fakes.telnyx import Callee, FakeTelnyx
from tests.fakes.telnyx import FakeCall as TelnyxCall
from tests.fakes.twilio import CallResource, FakeCall, FakeTwilio, FakeTwilioRest, new_sid

PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
CALLER = "+15551230001"
VOICEMAIL_TO = "+15557770000"
ENGINE_KEY = "sk-test"


# ====================================================================== call handles


class CallHandle(Protocol):
    """One live call as the far end sees it, whatever the carrier."""

    @property
    def call_id(self) -> str: ...  # patterd's id

    async def say(self, ulaw: bytes) -> None: ...
    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None: ...
    def heard_bytes(self) -> int: ...
    def speech_started(self) -> list[float]: ...
    def clear_times(self) -> list[float]: ...
    def media_times(self) -> list[float]: ...
    async def wait_for_clear(self, timeout: float = 5.0) -> float: ...
    async def send_dtmf(self, digit: str) -> None: ...
    async def send_raw(self, text: str) -> None: ...
    async def hangup_from_far_end(self) -> None: ...
    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None: ...
    def violations(self) -> list[str]: ...


@dataclass
class TwilioHandle:
    """A FakeTwilio call behind the neutral verbs."""

    call: FakeCall
    rest: FakeTwilioRest

    @property
    def call_id(self) -> str:
        return self.call.twiml_parameters["call_id"]

    async def say(self, ulaw: bytes) -> None:
        await self.call.say(ulaw)

    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None:
        await self.call.wait_for_audio(n_bytes, played=True, timeout=timeout)

    def heard_bytes(self) -> int:
        return len(self.call.played)

    def speech_started(self) -> list[float]:
        return self.call.speech_started

    def clear_times(self) -> list[float]:
        return self.call.clears

    def media_times(self) -> list[float]:
        return self.call.media_times

    async def wait_for_clear(self, timeout: float = 5.0) -> float:
        await self.call.wait_for_clear(timeout=timeout)
        return self.call.clears[-1]

    async def send_dtmf(self, digit: str) -> None:
        await self.call.send_dtmf(digit)

    async def send_raw(self, text: str) -> None:
        await self.call.send_raw(text)

    async def hangup_from_far_end(self) -> None:
        """The caller hangs up: stream `stop`, socket closed, then the completed status callback."""
        await self.call.stop()
        assert await self.call.post_status("completed") == 204

    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None:
        """The daemon hung up over REST (Status=completed) and Twilio ended the stream."""
        sid = self.call.call_sid
        await self.rest.wait_for_request(
            lambda r: r.path.endswith(f"/Calls/{sid}.json") and r.get("Status") == "completed",
            timeout=timeout,
        )
        await self.call.wait_closed(timeout=timeout)

    def violations(self) -> list[str]:
        return self.call.violations


@dataclass
class TelnyxHandle:
    """A FakeTelnyx call behind the neutral verbs."""

    call: TelnyxCall
    fake: FakeTelnyx

    @property
    def call_id(self) -> str:
        assert self.call.client_state, "the daemon has not answered with client_state yet"
        return telnyx_proto.decode_client_state(self.call.client_state) or ""

    async def say(self, ulaw: bytes) -> None:
        self.call.say(ulaw)
        await self.call.wait_sent()

    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None:
        await self.call.wait_heard(n_bytes, timeout=timeout)

    def heard_bytes(self) -> int:
        return len(self.call.heard)

    def speech_started(self) -> list[float]:
        return self.call.speech_started

    def clear_times(self) -> list[float]:
        return self.call.clear_times

    def media_times(self) -> list[float]:
        return self.call.media_times

    async def wait_for_clear(self, timeout: float = 5.0) -> float:
        await self.fake._wait(lambda: bool(self.call.clear_times), timeout, "a clear frame")
        return self.call.clear_times[-1]

    async def send_dtmf(self, digit: str) -> None:
        await self.call.press(digit)

    async def send_raw(self, text: str) -> None:
        await self.call.send_raw(text)

    async def hangup_from_far_end(self) -> None:
        await self.call.hangup("normal_clearing")

    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None:
        await self.fake.wait_command("hangup", self.call.call_control_id, timeout=timeout)
        await asyncio.wait_for(self.call.ended.wait(), timeout)

    def violations(self) -> list[str]:
        return []


# ====================================================================== carriers


class Carrier(Protocol):
    """A carrier fake the scenarios can drive."""

    name: str

    def config(self) -> str: ...
    async def attach(self, daemon_url: str) -> None: ...
    async def detach(self) -> None: ...
    async def inbound_call(self, from_: str = CALLER, to: str = NUMBER) -> CallHandle: ...
    async def answer_outbound(self, to: str, answered_by: str) -> CallHandle: ...
    async def send_bad_signature(self) -> int: ...
    async def open_media(self, call_id: str) -> int | None: ...
    def hangup_requests(self, handle: CallHandle) -> int: ...
    def dial_request(self) -> dict[str, Any]: ...


class TwilioCarrier:
    """FakeTwilioRest + FakeTwilio."""

    name = "twilio"

    def __init__(self) -> None:
        self.rest = FakeTwilioRest()
        self.net: FakeTwilio | None = None

    async def start(self) -> None:
        await self.rest.start()

    async def close(self) -> None:
        await self.detach()
        await self.rest.close()

    def config(self) -> str:
        return (
            f"carrier: {{type: twilio, account_sid: {self.rest.account_sid}, "
            f"auth_token: {self.rest.auth_token}, base_url: '{self.rest.base_url}', "
            "retry_backoff_secs: 0.05}\n"
        )

    async def attach(self, daemon_url: str) -> None:
        self.net = FakeTwilio(daemon_url, PUBLIC_HOST, rest=self.rest)
        await self.net.__aenter__()

    async def detach(self) -> None:
        if self.net is not None:
            await self.net.__aexit__(None, None, None)
            self.net = None

    async def inbound_call(self, from_: str = CALLER, to: str = NUMBER) -> CallHandle:
        assert self.net is not None
        call = await self.net.inbound_call(from_, to)
        assert call.webhook_status == 200 and call.twiml is not None and call.twiml.stream_url, call.twiml
        return TwilioHandle(call, self.rest)

    async def answer_outbound(self, to: str, answered_by: str) -> CallHandle:
        assert self.net is not None
        resource: CallResource = await self.rest.wait_for_call(index=self._outbound_seen())
        assert resource.to == to
        call = await self.net.answer_outbound(resource)
        handle = TwilioHandle(call, self.rest)
        assert await call.post_amd(answered_by) == 204
        return handle

    def _outbound_seen(self) -> int:
        assert self.net is not None
        return sum(1 for c in self.net.calls.values() if c.direction == "outbound-api")

    def dial_request(self) -> dict[str, Any]:
        dials = [r for r in self.rest.requests if r.path.endswith("/Calls.json") and r.method == "POST"]
        return dict(dials[-1].form)

    async def send_bad_signature(self) -> int:
        assert self.net is not None
        params = {"CallSid": new_sid("CA"), "From": CALLER, "To": NUMBER, "CallStatus": "ringing"}
        status, _ = await self.net.post_webhook(
            self.net.public_url("/webhooks/twilio/voice"), params, signature="bm90IGEgc2lnbmF0dXJl"
        )
        return status

    async def open_media(self, call_id: str) -> int | None:
        """Open a (correctly signed) media websocket for `call_id`; the refusal's HTTP status, or None."""
        assert self.net is not None
        public = f"wss://{PUBLIC_HOST}/ws/stream/{call_id}"
        headers = {"X-Twilio-Signature": self.net.sign(public, None)}
        return await _try_ws(self.net.session, self.net.local_url(public), headers)

    def hangup_requests(self, handle: CallHandle) -> int:
        assert isinstance(handle, TwilioHandle)
        sid = handle.call.call_sid
        return sum(1 for r in self.rest.requests if r.path.endswith(f"/Calls/{sid}.json") and r.get("Status"))


class TelnyxCarrier:
    """FakeTelnyx (REST, signed webhooks, media)."""

    name = "telnyx"

    def __init__(self) -> None:
        self.fake = FakeTelnyx()

    async def start(self) -> None:
        await self.fake.start()

    async def close(self) -> None:
        await self.fake.close()

    def config(self) -> str:
        return (
            f"carrier: {{type: telnyx, api_key: {self.fake.api_key}, connection_id: '{self.fake.connection_id}', "
            f"public_key: '{self.fake.public_key_b64}', base_url: '{self.fake.base_url}', retry_backoff_ms: 50}}\n"
        )

    async def attach(self, daemon_url: str) -> None:
        self.fake.webhook_base = daemon_url

    async def detach(self) -> None:
        pass

    async def _answered(self, call: TelnyxCall) -> TelnyxHandle:
        await asyncio.wait_for(call.stream_open.wait(), 10)
        return TelnyxHandle(call, self.fake)

    async def inbound_call(self, from_: str = CALLER, to: str = NUMBER) -> CallHandle:
        call = await self.fake.place_call(from_, to)
        await self.fake.wait_command("answer", call.call_control_id)
        return await self._answered(call)

    async def answer_outbound(self, to: str, answered_by: str) -> CallHandle:
        # The callee's behaviour is scripted before the dial; see `script_callee`.
        dials = [c for c in self.fake.commands if c.action == "dial" and c.body.get("to") == to]
        if not dials:
            await self.fake.wait_command("dial")
            dials = [c for c in self.fake.commands if c.action == "dial" and c.body.get("to") == to]
        call = self.fake.calls[dials[-1].call_control_id]
        handle = await self._answered(call)
        await self.fake.wait_webhook("call.machine.detection.ended", call.call_control_id)
        return handle

    def script_callee(self, to: str, answered_by: str) -> None:
        self.fake.callee(to, Callee(answer="human" if answered_by == "human" else "machine"))

    def dial_request(self) -> dict[str, Any]:
        return dict(self.fake.commands_for("dial")[-1].body)

    async def send_bad_signature(self) -> int:
        call = TelnyxCall(self.fake, f"v3:bad{time.time_ns()}", "incoming", CALLER, NUMBER)
        body = self.fake.envelope(call, "call.initiated", {"state": "parked"})
        headers = self.fake.sign(body)
        headers["telnyx-signature-ed25519"] = base64.b64encode(b"\x00" * 64).decode()
        sent = await self.fake.post_webhook(body, headers=headers)
        return sent.status

    async def send_stale_timestamp(self) -> int:
        call = TelnyxCall(self.fake, f"v3:old{time.time_ns()}", "incoming", CALLER, NUMBER)
        body = self.fake.envelope(call, "call.initiated", {"state": "parked"})
        sent = await self.fake.post_webhook(body, timestamp=int(time.time()) - 400)
        return sent.status

    async def open_media(self, call_id: str) -> int | None:
        assert self.fake._session is not None
        base = (self.fake.webhook_base or "").replace("http://", "ws://")
        return await _try_ws(self.fake._session, f"{base}/ws/telnyx/stream/{call_id}", {})

    def hangup_requests(self, handle: CallHandle) -> int:
        assert isinstance(handle, TelnyxHandle)
        return len(
            [
                c
                for c in self.fake.commands
                if c.action == "hangup" and c.call_control_id == handle.call.call_control_id
            ]
        )


async def _try_ws(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> int | None:
    """Open a websocket; the HTTP status of a refused handshake, else None after a close from the server."""
    try:
        ws = await session.ws_connect(url, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    msg = await ws.receive(timeout=5)
    await ws.close()
    return None if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) else -1


def make_carrier(name: str) -> TwilioCarrier | TelnyxCarrier:
    return TwilioCarrier() if name == "twilio" else TelnyxCarrier()


# ====================================================================== the rest of the world


@dataclass
class ToolServer:
    """A tiny HTTP endpoint a `webhook` tool POSTs to; records the JSON it got."""

    answer: dict[str, Any] = field(default_factory=lambda: {"status": "shipped", "eta": "tomorrow"})
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/lookup", self._lookup)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/lookup"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _lookup(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.json_response(self.answer)


def daemon_config(carrier: Carrier, engine_url: str, tool_url: str, records: Path) -> str:
    """A patter.yaml for the carrier under test with the fake Realtime engine."""
    return (
        carrier.config()
        + f"""phone_number: "{NUMBER}"
webhook_url: {PUBLIC_HOST}
persist: {records}
logging: {{level: info}}
server: {{drain_timeout_secs: 5}}
agents:
  - name: receptionist
    engine:
      type: openai_realtime
      base_url: {engine_url}
      api_key: {ENGINE_KEY}
      voice: nova
      max_retries: 1
      retry_backoff_secs: 0.05
      connect_timeout_secs: 2
    system_prompt: You are a friendly receptionist for {{company}}.
    first_message: Thanks for calling {{company}}!
    variables: {{company: Acme}}
    tools:
      - {{type: end_call}}
      - type: webhook
        name: lookup_order
        description: Look up an order by number.
        parameters: {{type: object, properties: {{order_number: {{type: string}}}}, required: [order_number]}}
        url: {tool_url}
        timeout_secs: 3
"""
    )


class Api:
    """The daemon's ops API over aiohttp (the fakes live on this event loop, so no blocking calls)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.request(method, self.base_url + path, json=body) as resp:
            text = await resp.text()
            if "json" in resp.headers.get("content-type", ""):
                return resp.status, json.loads(text)
            return resp.status, text

    async def metric(self, name: str, match: Callable[[str], bool] = lambda _: True) -> float:
        """The sum of a Prometheus metric's samples whose line satisfies `match`."""
        _, text = await self.request("GET", "/metrics")
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith(name) and (line[len(name)] in " {") and match(line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_call(
        self, call_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll GET /api/v1/calls/{id} until `predicate(body)` holds (records are written off the loop)."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = await self.request("GET", f"/api/v1/calls/{call_id}")
            if status == 200 and predicate(body):
                return dict(body)
            await asyncio.sleep(0.05)  # polling an HTTP-observable state of another process
        raise AssertionError(f"call {call_id} did not reach the expected state; last: {body!r:.2000}")


def record_dir(records: Path, call_id: str) -> Path:
    """The on-disk directory of a call record (contracts §4 layout)."""
    found = list(records.glob(f"calls/*/*/*/{call_id}"))
    assert len(found) == 1, f"expected one record directory for {call_id}, found {found}"
    return found[0]


async def wait_record(records: Path, call_id: str, status: str, timeout: float = 10.0) -> Path:
    """The record directory once its metadata.json says `status` (the store writes off the event loop)."""
    deadline = time.monotonic() + timeout
    meta: Any = None
    while time.monotonic() < deadline:
        found = list(records.glob(f"calls/*/*/*/{call_id}/metadata.json"))
        if found:
            with contextlib.suppress(ValueError, OSError):
                meta = json.loads(found[0].read_text())
                if meta.get("status") == status:
                    return found[0].parent
        await asyncio.sleep(0.05)  # polling files another process writes
    raise AssertionError(f"record of {call_id} never reached status {status!r}; last metadata {meta!r:.1000}")


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Until `predicate()` holds, or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # the fakes change on their own sockets


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@asynccontextmanager
async def engine_server(**kwargs: Any) -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(api_key=ENGINE_KEY, **kwargs) as fake:
        yield fake
