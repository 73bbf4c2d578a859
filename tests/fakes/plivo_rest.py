"""The fake Plivo's Voice REST API on loopback: basic auth, JSON bodies, Plivo-shaped answers and errors.

Followed: plivo-python 4.63 `rest/client.py` (/v1/Account/{auth_id}/..., trailing slashes, JSON bodies,
basic auth) and `resources/calls.py` (Call create → request_uuid; Call delete; Call update with legs/aleg_url
(transfer); Call/Record; Request delete (cancel an unanswered call)); errors are {api_id, error}.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback_rest import LoopbackRest
from tests.fakes.twilio_rest import _wait_until


def new_uuid() -> str:
    return str(uuid.uuid4())


@dataclass
class PlivoRequest:
    """One request the REST fake received."""

    method: str
    path: str
    body: dict[str, Any]
    authorized: bool
    status: int = 0


@dataclass
class PlivoCallResource:
    """A call the fake knows: created through POST Call/, or an inbound call placed by FakePlivo."""

    request_uuid: str
    to: str
    from_: str
    direction: str  # "inbound" | "outbound"
    call_uuid: str = ""
    status: str = "queued"
    answer_url: str | None = None
    hangup_url: str | None = None
    ring_url: str | None = None
    machine_detection: str | None = None
    machine_detection_url: str | None = None
    transfers: list[dict[str, Any]] = field(default_factory=list)
    recordings: list[dict[str, Any]] = field(default_factory=list)


class FakePlivoRest(LoopbackRest):
    """Plivo's Voice REST API for one account: basic auth, JSON bodies, Plivo-shaped answers and errors."""

    def __init__(self, auth_id: str | None = None, auth_token: str | None = None) -> None:
        super().__init__()
        self.auth_id = auth_id or "MA" + secrets.token_hex(9).upper()
        self.auth_token = auth_token or secrets.token_urlsafe(30)
        self.requests: list[PlivoRequest] = []
        self.calls: dict[str, PlivoCallResource] = {}  # by request uuid, and by call uuid once known
        self.on_hangup: Callable[[PlivoCallResource], None] | None = None
        self.on_transfer: Callable[[PlivoCallResource, str], None] | None = None
        self._faults: list[list[int]] = []  # [status, times]

    def fail_next(self, status: int, *, times: int = 1) -> None:
        self._faults.append([status, times])

    async def wait_for_request(
        self, predicate: Callable[[PlivoRequest], bool], *, timeout: float = 5.0
    ) -> PlivoRequest:
        await _wait_until(
            self._changed, lambda: any(predicate(r) for r in self.requests), timeout, "a Plivo request"
        )
        return next(r for r in self.requests if predicate(r))

    async def wait_for_call(self, *, timeout: float = 5.0, index: int = 0) -> PlivoCallResource:
        def outbound() -> list[PlivoCallResource]:
            seen = {id(c): c for c in self.calls.values() if c.direction == "outbound"}
            return list(seen.values())

        await _wait_until(self._changed, lambda: len(outbound()) > index, timeout, "an outbound call")
        return outbound()[index]

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except ValueError:
            return False
        return (
            scheme.lower() == "basic"
            and login == self.auth_id
            and secrets.compare_digest(password, self.auth_token)
        )

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"api_id": new_uuid(), "error": message}, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"<not json>": text}
        record = PlivoRequest(request.method, request.path, body, self._authorized(request))
        self.requests.append(record)
        response = self._answer(record)
        record.status = response.status
        async with self._changed:
            self._changed.notify_all()
        return response

    def _answer(self, record: PlivoRequest) -> web.Response:
        for fault in self._faults:
            if fault[1] > 0:
                fault[1] -= 1
                return self._error(fault[0], "fault injected by the test")
        if not record.authorized:
            return self._error(401, "Authentication credentials invalid")
        prefix = f"/v1/Account/{self.auth_id}/"
        if not record.path.startswith(prefix) or not record.path.endswith("/"):
            return self._error(404, f"not found: {record.path}")
        parts = [p for p in record.path[len(prefix) :].split("/") if p]
        method = record.method
        if not parts and method == "GET":
            return web.json_response(
                {"api_id": new_uuid(), "auth_id": self.auth_id, "account_type": "standard"}
            )
        if parts == ["Call"] and method == "POST":
            return self._create(record.body)
        if len(parts) == 2 and parts[0] == "Request" and method == "DELETE":
            call = self.calls.get(parts[1])
            if call is None or call.call_uuid:
                return self._error(404, "call request not found or already answered")
            call.status = "cancel"
            self._hung_up(call)
            return web.Response(status=204)
        call = self.calls.get(parts[1]) if len(parts) >= 2 and parts[0] == "Call" else None
        if call is None or not call.call_uuid or call.status != "in-progress":
            return self._error(404, "call not found")
        if len(parts) == 2 and method == "DELETE":
            call.status = "completed"
            self._hung_up(call)
            return web.Response(status=204)
        if len(parts) == 2 and method == "POST":
            if record.body.get("legs") != "aleg" or not record.body.get("aleg_url"):
                return self._error(400, "legs must be aleg with an aleg_url")
            call.transfers.append(record.body)
            if self.on_transfer is not None:
                self.on_transfer(call, str(record.body["aleg_url"]))
            return web.json_response({"api_id": new_uuid(), "message": "call transferred"}, status=202)
        if parts[2:] == ["Record"] and method == "POST":
            recording = {"recording_id": new_uuid(), "callback_url": record.body.get("callback_url")}
            call.recordings.append(recording)
            url = (
                f"https://media.plivo.com/v1/Account/{self.auth_id}/Recording/{recording['recording_id']}.mp3"
            )
            body = {"api_id": new_uuid(), "message": "call recording started", "url": url, **recording}
            return web.json_response(body, status=202)
        return self._error(405, f"{method} not allowed on {record.path}")

    def _create(self, body: dict[str, Any]) -> web.Response:
        for key in ("from", "to", "answer_url"):
            if not body.get(key):
                return self._error(400, f"{key} is required")
        call = PlivoCallResource(
            request_uuid=new_uuid(),
            to=str(body["to"]),
            from_=str(body["from"]),
            direction="outbound",
            answer_url=body["answer_url"],
            hangup_url=body.get("hangup_url"),
            ring_url=body.get("ring_url"),
            machine_detection=body.get("machine_detection"),
            machine_detection_url=body.get("machine_detection_url"),
        )
        self.calls[call.request_uuid] = call
        answer = {"api_id": new_uuid(), "message": "call fired", "request_uuid": call.request_uuid}
        return web.json_response(answer, status=201)

    def _hung_up(self, call: PlivoCallResource) -> None:
        if self.on_hangup is not None:
            self.on_hangup(call)
