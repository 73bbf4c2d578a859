"""A carrier-neutral driver for end-to-end phone-call scenarios: one adapter per carrier fake, same verbs.

The world around the calls (webhook tool, config, ops API, records) is `scenario_world.py`, re-exported here.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import aiohttp

from patterd.protocols import telnyx as telnyx_proto
from tests.e2e.scenario_world import (
    CALLER,
    ENGINE_KEY,
    NUMBER,
    PUBLIC_HOST,
    VOICEMAIL_TO,
    Api,
    ToolServer,
    daemon_config,
    engine_server,
    read_jsonl,
    record_dir,
    wait_for,
    wait_record,
)
from tests.fakes.telnyx import Callee, FakeTelnyx
from tests.fakes.telnyx import FakeCall as TelnyxCall
from tests.fakes.twilio import CallResource, FakeCall, FakeTwilio, FakeTwilioRest, new_sid

__all__ = (  # the scenario verbs and, re-exported, the world around them (tests import both from here)
    "CALLER",
    "ENGINE_KEY",
    "NUMBER",
    "PUBLIC_HOST",
    "VOICEMAIL_TO",
    "Api",
    "CallHandle",
    "Carrier",
    "RestNetCarrier",
    "StreamCallVerbs",
    "TelnyxCarrier",
    "TelnyxHandle",
    "ToolServer",
    "TwilioCarrier",
    "TwilioHandle",
    "daemon_config",
    "engine_server",
    "make_carrier",
    "read_jsonl",
    "record_dir",
    "wait_for",
    "wait_record",
)


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


class StreamCallVerbs:
    """The neutral verbs of a call whose fake is a `tests.fakes.twilio.FakeCall` (or a subclass of it)."""

    call: FakeCall

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

    def violations(self) -> list[str]:
        return self.call.violations


@dataclass
class TwilioHandle(StreamCallVerbs):
    """A FakeTwilio call behind the neutral verbs."""

    call: FakeCall
    rest: FakeTwilioRest

    @property
    def call_id(self) -> str:
        return self.call.twiml_parameters["call_id"]

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


class _FakeRest(Protocol):
    async def start(self) -> object: ...
    async def close(self) -> None: ...


class _FakeNet(Protocol):
    async def __aenter__(self) -> object: ...
    async def __aexit__(self, *exc: object) -> None: ...


RestT = TypeVar("RestT", bound=_FakeRest)
NetT = TypeVar("NetT", bound=_FakeNet)


class RestNetCarrier(Generic[RestT, NetT]):
    """The lifecycle of an adapter made of a carrier's REST fake and its callers' side (webhooks, media)."""

    def __init__(self, rest: RestT, net_type: Callable[..., NetT]) -> None:
        self.rest = rest
        self.net: NetT | None = None
        self._net_type = net_type

    async def start(self) -> None:
        await self.rest.start()

    async def close(self) -> None:
        await self.detach()
        await self.rest.close()

    async def attach(self, daemon_url: str) -> None:
        self.net = self._net_type(daemon_url, PUBLIC_HOST, rest=self.rest)
        await self.net.__aenter__()

    async def detach(self) -> None:
        if self.net is not None:
            await self.net.__aexit__(None, None, None)
            self.net = None


class TwilioCarrier(RestNetCarrier[FakeTwilioRest, FakeTwilio]):
    """FakeTwilioRest + FakeTwilio."""

    name = "twilio"

    def __init__(self) -> None:
        super().__init__(FakeTwilioRest(), FakeTwilio)

    def config(self) -> str:
        return (
            f"carrier: {{type: twilio, account_sid: {self.rest.account_sid}, "
            f"auth_token: {self.rest.auth_token}, base_url: '{self.rest.base_url}', "
            "retry_backoff_secs: 0.05}\n"
        )

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
