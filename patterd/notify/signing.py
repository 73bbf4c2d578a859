"""HMAC-SHA256 request signatures of fleet POSTs: the shared token signs, and is never sent."""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Patterd-Timestamp"
SIGNATURE_HEADER = "X-Patterd-Signature"
MAX_SKEW_SECS = (
    300.0  # a signed request older (or newer) than this is refused: a captured one cannot be replayed later
)


def signature(token: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(token, "<timestamp>." + body)."""
    mac = hmac.new(token.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(token: str, body: bytes, now: float) -> dict[str, str]:
    """The headers that sign `body` at unix time `now`."""
    stamp = str(int(now))
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(token, stamp, body)}


def check_signature(
    token: str, timestamp: str | None, given: str | None, body: bytes, now: float
) -> str | None:
    """None when the signature is valid and fresh; else why not (safe to show: no secret in it)."""
    if not timestamp or not given:
        return f"the request must be signed: {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers"
    try:
        stamp = int(timestamp)
    except ValueError:
        return f"{TIMESTAMP_HEADER} must be unix seconds"
    if abs(now - stamp) > MAX_SKEW_SECS:
        return f"the signature is stale (more than {MAX_SKEW_SECS:g} s from this server's clock)"
    if not hmac.compare_digest(signature(token, timestamp, body).encode(), given.encode()):
        return (
            "the signature does not match (dashboard.notify_token must equal the central's dashboard_token)"
        )
    return None
