"""The token rule: ops API and dashboard need a bearer token (or the login cookie) when one applies."""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import HTTPConnection

COOKIE_NAME = "patterd_session"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
