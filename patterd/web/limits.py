"""Abuse limits at the HTTP edge: body size and body read time per route, requests in flight per client."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from dataclasses import dataclass

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("patterd.web.limits")

KIB = 1024
LOGIN_MAX_BYTES = 8 * KIB  # the login form is one token and a path
WEBHOOK_MAX_BYTES = 64 * KIB  # carrier callbacks are a few KB of form fields or JSON
API_MAX_BYTES = 64 * KIB  # ops API JSON bodies (a call's variables included)
OTHER_MAX_BYTES = 8 * KIB  # every other route takes no body worth the name
# A fleet batch of events, or a Patter SDK call end with its whole transcript and metrics.
INGEST_MAX_BYTES = 1024 * KIB
INGEST_PATHS = frozenset({"/api/v1/fleet/events", "/api/dashboard/ingest"})
BODY_READ_TIMEOUT_SECS = 10.0  # a whole body must arrive within this time of the request's headers
MAX_REQUESTS_PER_CLIENT = 64  # HTTP requests in flight from one non-loopback address
# After a 413 the rest of the body is read and dropped for a moment before the connection closes: closing a
# socket with unread data sends a TCP reset, which can destroy the 413 before the client reads it.
LINGER_SECS = 1.0
LINGER_MAX_BYTES = 1024 * KIB
PROBES = frozenset({"/healthz", "/readyz", "/health"})


def body_limit(path: str) -> int:
    """The largest request body `path` accepts, in bytes."""
    if path == "/login":
        return LOGIN_MAX_BYTES
    if path.startswith("/webhooks/"):
        return WEBHOOK_MAX_BYTES
    if path in INGEST_PATHS:
        return INGEST_MAX_BYTES
    if path.startswith("/api/"):
        return API_MAX_BYTES
    return OTHER_MAX_BYTES


def is_loopback_address(host: str) -> bool:
    """127.0.0.0/8 and ::1 (also as an IPv4-mapped IPv6 address)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class BodyRefused(Exception):
    """Raised from the guarded `receive` when a body is too large or too slow; becomes a 413 or 408."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class EdgeSettings:
    """The limits one `EdgeLimits` applies (tests shorten them)."""

    read_timeout_secs: float = BODY_READ_TIMEOUT_SECS
    max_requests_per_client: int = MAX_REQUESTS_PER_CLIENT
    # Loopback peers are this host: a tunnel or reverse proxy carrying every outside client at once (the
    # proxy enforces its own per-client limits), the browser phone on this machine, or a local script.
    exempt_loopback: bool = True


class EdgeLimits:
    """Pure-ASGI middleware, outermost: refuses an oversized body before reading it (Content-Length) or
    while it streams, a body slower than the read timeout, and a client with too many requests in flight.

    It wraps `receive` instead of reading the body itself, so handlers keep streaming semantics and a body
    is never held twice; a refusal raised inside a handler's read is answered here, with `Connection: close`
    so the server drops the connection instead of reading the rest of the body.
    """

    def __init__(self, app: ASGIApp, settings: EdgeSettings | None = None) -> None:
        self.app = app
        self.settings = settings or EdgeSettings()
        self._in_flight: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = body_limit(path)
        declared = _content_length(scope)
        if declared is not None and declared < 0:
            await _refuse(send, 400, "the Content-Length header is not a number")
            return
        if declared is not None and declared > limit:
            message = f"the body is larger than {limit} bytes, the limit of {path}"
            await _refuse(send, 413, message, linger=receive)
            return
        client = scope["client"][0] if scope.get("client") else ""
        counted = path not in PROBES and not (self.settings.exempt_loopback and is_loopback_address(client))
        if counted:
            if self._in_flight.get(client, 0) >= self.settings.max_requests_per_client:
                await _refuse(
                    send,
                    429,
                    f"too many requests in flight from {client} "
                    f"(at most {self.settings.max_requests_per_client})",
                    retry_after=1,
                )
                return
            self._in_flight[client] = self._in_flight.get(client, 0) + 1
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            if counted:
                left = self._in_flight[client] - 1
                if left:
                    self._in_flight[client] = left
                else:
                    del self._in_flight[client]

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.read_timeout_secs
        received = 0
        body_done = False
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only `http.disconnect` comes, whenever it comes: no timeout
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyRefused(
                    408, f"the body did not arrive within {self.settings.read_timeout_secs:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyRefused(
                        413, f"the body is larger than {limit} bytes, the limit of {scope['path']}"
                    )
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except BodyRefused as exc:
            await self._answer(exc, started, scope, send, receive)
        except BaseExceptionGroup as group:  # a refusal raised in a task group (e.g. a streaming response)
            refused, rest = group.split(BodyRefused)
            if rest is not None:
                raise
            assert refused is not None
            first = refused.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, BodyRefused)
            await self._answer(first, started, scope, send, receive)

    async def _answer(
        self, exc: BodyRefused, started: bool, scope: Scope, send: Send, receive: Receive
    ) -> None:
        log.debug("request body refused", path=scope["path"], status=exc.status, reason=exc.message)
        if not started:  # once a response has begun the server closes the connection when the app returns
            await _refuse(send, exc.status, exc.message, linger=receive if exc.status == 413 else None)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent, -1 when not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


CODES = {400: "bad_request", 408: "request_timeout", 413: "payload_too_large", 429: "rate_limited"}


async def _refuse(
    send: Send, status: int, message: str, *, retry_after: int | None = None, linger: Receive | None = None
) -> None:
    """A JSON error (contract shape) that also closes the connection: the rest of the body is not handled.

    With `linger`, the whole response goes out but its end is held back while up to LINGER_MAX_BYTES of the
    body still in flight are read and dropped (for at most LINGER_SECS), so the client reads the answer
    before the close; the server closes the connection only once the response has ended.
    """
    body = json.dumps({"error": {"code": CODES[status], "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if linger is None:
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    await send({"type": "http.response.body", "body": body, "more_body": True})
    drained = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(LINGER_SECS):
            while drained < LINGER_MAX_BYTES:
                arrived = await linger()
                if arrived["type"] != "http.request" or not arrived.get("more_body", False):
                    break
                drained += len(arrived.get("body", b""))
    await send({"type": "http.response.body", "body": b"", "more_body": False})
