"""Twilio's REST API as a loopback fake (`FakeTwilioRest`): the calls, recordings and numbers patterd uses.

Part of the fake Twilio (`tests.fakes.twilio` documents what it follows).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from tests.fakes.loopback_rest import LoopbackRest

API_VERSION = "2010-04-01"


def basic_auth(login: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP basic auth."""
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


def new_sid(prefix: str) -> str:
    """A Twilio-shaped sid: two letters and 32 hex digits."""
    return prefix + secrets.token_hex(16)


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


class FakeTwilioRest(LoopbackRest):
    """Twilio's REST API for one account: basic auth, form bodies, Twilio-shaped JSON and errors."""

    def __init__(self, account_sid: str | None = None, auth_token: str | None = None) -> None:
        super().__init__()
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.requests: list[RecordedRequest] = []
        self.calls: dict[str, CallResource] = {}
        self.numbers: dict[str, dict[str, Any]] = {}
        self.on_call_update: Callable[[CallResource, list[tuple[str, str]]], None] | None = None
        self._faults: list[_Fault] = []
        self.api_root = f"/{API_VERSION}"  # compatible APIs (SignalWire's LaML) serve it under another root

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
