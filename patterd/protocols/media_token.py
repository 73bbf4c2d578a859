"""Per-call media websocket tokens: an HMAC of our call id, handed to the carrier in the answer we sign over TLS.

For carriers whose websocket upgrade carries no request signature of its own (Plivo's audio stream,
SignalWire's `authBearerToken`): only someone who read our answer can open that call's media socket.
"""

from __future__ import annotations

import hashlib
import hmac

_PURPOSE = b"patterd-media-socket:"


def media_token(secret: str, call_id: str) -> str:
    """hex(HMAC-SHA256(secret, purpose + call id)): [0-9a-f] only, fits any carrier's token alphabet."""
    return hmac.new(secret.encode("utf-8"), _PURPOSE + call_id.encode("utf-8"), hashlib.sha256).hexdigest()


def valid_media_token(secret: str, call_id: str, token: str | None) -> bool:
    """Check a presented token in constant time."""
    if not token:
        return False
    return hmac.compare_digest(media_token(secret, call_id).encode(), token.encode("utf-8", "replace"))
