"""The token rule: ops API and dashboard need a bearer token (or the login cookie) when one applies."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from patterd.web.throttle import FailureThrottle

COOKIE_NAME = "patterd_session"


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time token comparison."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def presented_token(conn: HTTPConnection) -> str | None:
    """The token a request carries: `Authorization: Bearer …`, else the dashboard's login cookie."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return conn.cookies.get(COOKIE_NAME)


def is_authorized(conn: HTTPConnection, token: str | None, *, loopback: bool) -> bool:
    """Apply the rule: with a token configured it is required; without one only loopback is open."""
    if token:
        return token_matches(presented_token(conn), token)
    return loopback


def client_address(conn: HTTPConnection) -> str:
    """Who is asking: the socket peer (no forwarded header is trusted: no proxy is configured as trusted)."""
    return conn.client.host if conn.client is not None else ""


@dataclass(frozen=True)
class Access:
    """The token rule's answer for one request."""

    ok: bool
    retry_after: float = 0.0  # > 0: refused unchecked, this address failed too often (answer 429)


def check_access(
    conn: HTTPConnection, token: str | None, *, loopback: bool, throttle: FailureThrottle
) -> Access:
    """`is_authorized`, with wrong tokens counted per client address and a locked address refused."""
    if not token:
        return Access(loopback)
    given = presented_token(conn)
    if not given:  # nothing presented is not a guess (a browser's first visit, a forgotten header)
        return Access(False)
    client = client_address(conn)
    wait = throttle.retry_after(client)
    if wait > 0:
        return Access(False, wait)
    if token_matches(given, token):
        return Access(True)
    throttle.failed(client, given)
    return Access(False)


CSRF_HEADER = "x-patterd-csrf"


def csrf_refused(conn: HTTPConnection, method: str) -> bool:
    """A state-changing request a browser could be tricked into sending must carry `X-Patterd-CSRF: 1`.

    Bearer-token clients (scripts) are not browsers riding a cookie; a request with neither a cookie nor
    an Origin header did not come from a web page.
    """
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return False
    from_browser = COOKIE_NAME in conn.cookies or "origin" in conn.headers
    return from_browser and conn.headers.get(CSRF_HEADER) != "1"
