"""The token rule: ops API and dashboard need a bearer token (or the login cookie) when one applies."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

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
