"""The fake Vonage Voice REST API on loopback: RS256 application JWTs checked with the public key, JSON bodies.

Followed: vonage-voice 1.5.1 `voice.py` (POST /v1/calls → 201 {uuid, status, direction,
conversation_uuid}; PUT /v1/calls/{uuid} {"action": "hangup"} or {"action": "transfer", "destination":
{"type": "ncco", "ncco": [...]}} → 204; GET /v1/calls), `models/requests.py` (`CreateCallRequest`: `to` a
list of endpoints, `from`, `answer_url` a list or `ncco`), vonage-jwt 1.1.5 (application JWT claims
application_id, iat, jti, exp; RS256) and RFC 7807 error bodies {type, title, detail}.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.loopback_rest import LoopbackRest
from tests.fakes.twilio_rest import _wait_until


def new_uuid() -> str:
    return str(uuid.uuid4())


def rsa_key_pair() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh 2048-bit RSA key, as the Vonage dashboard hands them out."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@dataclass
class VonageRequest:
    """One request the REST fake received."""

    method: str
    path: str
    body: dict[str, Any]
    authorized: bool
    claims: dict[str, Any] = field(default_factory=dict)
    status: int = 0


@dataclass
class VonageCallResource:
    """A call the fake knows: created through POST /v1/calls, or an inbound call placed by FakeVonage."""

    uuid: str
    to: str
    from_: str
    direction: str  # "inbound" | "outbound"
    status: str = "started"
    answer_url: str | None = None
    event_url: str | None = None
    machine_detection: str | None = None
    transfers: list[list[dict[str, Any]]] = field(default_factory=list)


class FakeVonageRest(LoopbackRest):
    """Vonage's Voice REST API for one application: the JWT, the calls, Vonage-shaped answers and errors."""

    def __init__(self) -> None:
        super().__init__()
        self.application_id = new_uuid()
        self.private_key, self.public_key = rsa_key_pair()
        self.signature_secret = secrets.token_urlsafe(32)
        self.api_key = secrets.token_hex(4)
        self.requests: list[VonageRequest] = []
        self.calls: dict[str, VonageCallResource] = {}
        self.on_hangup: Callable[[VonageCallResource], None] | None = None
        self.on_transfer: Callable[[VonageCallResource, list[dict[str, Any]]], None] | None = None
        self._faults: list[list[int]] = []  # [status, times]

    def fail_next(self, status: int, *, times: int = 1) -> None:
        self._faults.append([status, times])

    async def wait_for_request(
        self, predicate: Callable[[VonageRequest], bool], *, timeout: float = 5.0
    ) -> VonageRequest:
        await _wait_until(
            self._changed, lambda: any(predicate(r) for r in self.requests), timeout, "a Vonage request"
        )
        return next(r for r in self.requests if predicate(r))

    async def wait_for_call(self, *, timeout: float = 5.0, index: int = 0) -> VonageCallResource:
        def outbound() -> list[VonageCallResource]:
            return [c for c in self.calls.values() if c.direction == "outbound"]

        await _wait_until(self._changed, lambda: len(outbound()) > index, timeout, "an outbound call")
        return outbound()[index]

    def _claims(self, request: web.Request) -> dict[str, Any] | None:
        """The application JWT's claims when it verifies with our public key and names our application."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["application_id", "iat", "exp", "jti"]},
            )
        except jwt.PyJWTError:
            return None
        return claims if claims.get("application_id") == self.application_id else None

    @staticmethod
    def _error(status: int, title: str, detail: str = "") -> web.Response:
        body = {"type": f"https://developer.nexmo.com/api-errors#{status}", "title": title, "detail": detail}
        return web.json_response(body, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {"<not json>": text}
        claims = self._claims(request)
        record = VonageRequest(request.method, request.path_qs, body, claims is not None, claims or {})
        self.requests.append(record)
        response = self._answer(record, request.path)
        record.status = response.status
        async with self._changed:
            self._changed.notify_all()
        return response

    def _answer(self, record: VonageRequest, path: str) -> web.Response:
        for fault in self._faults:
            if fault[1] > 0:
                fault[1] -= 1
                return self._error(fault[0], "Fault", "injected by the test")
        if not record.authorized:
            return self._error(401, "Unauthorized", "You did not provide correct credentials.")
        if path == "/v1/calls" and record.method == "GET":
            return web.json_response({"count": len(self.calls), "page_size": 1, "_embedded": {"calls": []}})
        if path == "/v1/calls" and record.method == "POST":
            return self._create(record.body)
        call = self.calls.get(path.removeprefix("/v1/calls/")) if path.startswith("/v1/calls/") else None
        if call is None:
            return self._error(404, "Not Found", f"no call at {path}")
        if record.method != "PUT":
            return self._error(405, "Method Not Allowed", f"{record.method} {path}")
        if call.status in ("completed", "cancelled", "failed"):
            return self._error(400, "Bad Request", "the call is not live")
        action = record.body.get("action")
        if action == "hangup":
            call.status = "completed"
            if self.on_hangup is not None:
                self.on_hangup(call)
            return web.Response(status=204)
        if action == "transfer":
            destination = record.body.get("destination")
            if not isinstance(destination, dict) or destination.get("type") != "ncco":
                return self._error(400, "Bad Request", "destination must be {type: ncco, ...}")
            ncco = destination.get("ncco")
            if not isinstance(ncco, list) or not ncco:
                return self._error(400, "Bad Request", "destination.ncco must be a non-empty list")
            call.transfers.append(ncco)
            if self.on_transfer is not None:
                self.on_transfer(call, ncco)
            return web.Response(status=204)
        return self._error(400, "Bad Request", f"unknown action {action!r}")

    def _create(self, body: dict[str, Any]) -> web.Response:
        to, from_ = body.get("to"), body.get("from")
        if not (isinstance(to, list) and to and isinstance(to[0], dict) and to[0].get("type") == "phone"):
            return self._error(400, "Bad Request", "to must be a list of endpoints")
        if not (isinstance(from_, dict) and from_.get("type") == "phone" and from_.get("number")):
            return self._error(400, "Bad Request", "from must be a phone endpoint")
        if ("answer_url" in body) == ("ncco" in body):
            return self._error(400, "Bad Request", "exactly one of answer_url and ncco")
        for key in ("answer_url", "event_url"):
            value = body.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(u, str) for u in value)):
                return self._error(400, "Bad Request", f"{key} must be a list of URLs")
        number = str(to[0].get("number", ""))
        if not number.isdigit() or not str(from_["number"]).isdigit():
            return self._error(400, "Bad Request", "numbers are E.164 digits without '+'")
        call = VonageCallResource(
            uuid=new_uuid(),
            to=number,
            from_=str(from_["number"]),
            direction="outbound",
            answer_url=(body.get("answer_url") or [None])[0],
            event_url=(body.get("event_url") or [None])[0],
            machine_detection=body.get("machine_detection"),
        )
        self.calls[call.uuid] = call
        answer = {
            "uuid": call.uuid,
            "status": "started",
            "direction": "outbound",
            "conversation_uuid": new_uuid(),
        }
        return web.json_response(answer, status=201)
