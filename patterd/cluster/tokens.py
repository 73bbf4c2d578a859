"""Signed call tokens: any replica holding the cluster secret admits a call's media socket (sans-I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from patterd.protocols import jsontext

# Why a media socket's token was refused (also the rejection counter's reasons).
TokenReason = Literal["token_invalid", "token_expired", "token_replayed"]
ENV_SECRET = "PATTERD_CLUSTER_SECRET"
MAX_TOKEN_CHARS = 8192  # a longer "token" is refused before any decoding work
# How long a token admits media after the answer. The media socket follows an inbound answer within
# seconds; an outbound call's socket comes when the callee picks up, after up to the ringing window
# (switchboard.MEDIA_TIMEOUT_SECS["outbound"] = 120 s), so its token outlives that window.
TOKEN_TTL_SECS: dict[str, float] = {"inbound": 120.0, "outbound": 180.0}


class TokenError(ValueError):
    """A token that does not admit media; `reason` is a TokenReason."""

    def __init__(self, reason: TokenReason, message: str) -> None:
        super().__init__(message)
        self.reason: TokenReason = reason


@dataclass(frozen=True)
class CallClaim:
    """What a token says about its call: enough for any replica to open it."""

    call_id: str
    agent: str
    direction: Literal["inbound", "outbound"]
    caller: str
    callee: str
    carrier: str
    carrier_call_id: str
    exp: float  # unix seconds
    nonce: str
    origin: str = ""  # the replica that answered the webhook (told when another one takes the media)
    variables: Mapping[str, str] = field(default_factory=dict)
    voicemail_message: str | None = None
    trace_id: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise TokenError("token_invalid", "token is not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def resolve_secret(configured: str | None) -> tuple[bytes, bool]:
    """(secret, shared): the configured one, else $PATTERD_CLUSTER_SECRET, else a random per-process one."""
    value = configured or os.environ.get(ENV_SECRET, "").strip()
    if value:
        return value.encode("utf-8"), True
    return secrets.token_bytes(32), False


class CallTokens:
    """Issues and verifies call tokens under one secret (never shown: repr hides it)."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the cluster secret must be at least 16 bytes")
        self._secret = secret
        self._clock = clock

    def __repr__(self) -> str:
        return "CallTokens(secret=**********)"

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def issue(self, claim: CallClaim) -> str:
        """The token for `claim` (its exp and nonce are the caller's: see `claim_for`)."""
        body: dict[str, Any] = {
            "call_id": claim.call_id,
            "agent": claim.agent,
            "direction": claim.direction,
            "caller": claim.caller,
            "callee": claim.callee,
            "carrier": claim.carrier,
            "carrier_call_id": claim.carrier_call_id,
            "exp": round(claim.exp, 3),
            "nonce": claim.nonce,
            "origin": claim.origin,
        }
        if claim.variables:
            body["variables"] = dict(claim.variables)
        if claim.voicemail_message is not None:
            body["voicemail_message"] = claim.voicemail_message
        if claim.trace_id:
            body["trace_id"] = claim.trace_id
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return _b64(payload) + "." + _b64(self._mac(payload))

    def expiry(self, direction: str) -> float:
        """When a token issued now for a call in `direction` stops admitting media."""
        return self._clock() + TOKEN_TTL_SECS.get(direction, TOKEN_TTL_SECS["inbound"])

    def verify(self, token: str) -> CallClaim:
        """The claim of a genuine, unexpired token; TokenError otherwise (replay is the ledger's job)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise TokenError("token_invalid", "malformed token")
        body_text, mac_text = token.split(".")
        payload, mac = _unb64(body_text), _unb64(mac_text)
        # compare_digest: the time taken says nothing about how much of the MAC matched
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TokenError("token_invalid", "token signature does not match")
        try:
            raw = jsontext.loads(payload)
        except jsontext.JSONError as exc:  # signed by us, so only a bug gets here
            raise TokenError("token_invalid", f"token payload: {exc}") from None
        claim = _claim(raw)
        if claim.exp <= self._clock():
            raise TokenError("token_expired", "token expired")
        return claim


def _claim(raw: Any) -> CallClaim:
    """A CallClaim from a verified payload, checking every field's type."""
    if not isinstance(raw, dict):
        raise TokenError("token_invalid", "token payload is not an object")
    text = {
        k: raw.get(k)
        for k in ("call_id", "agent", "direction", "caller", "callee", "carrier", "carrier_call_id")
    }
    text.update({"nonce": raw.get("nonce"), "origin": raw.get("origin", "")})
    if not all(isinstance(v, str) for v in text.values()) or text["direction"] not in ("inbound", "outbound"):
        raise TokenError("token_invalid", "token payload has a bad field")
    exp, variables = raw.get("exp"), raw.get("variables", {})
    voicemail, trace_id = raw.get("voicemail_message"), raw.get("trace_id", "")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise TokenError("token_invalid", "token payload has no expiry")
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise TokenError("token_invalid", "token variables must be strings")
    if (voicemail is not None and not isinstance(voicemail, str)) or not isinstance(trace_id, str):
        raise TokenError("token_invalid", "token payload has a bad field")
    return CallClaim(
        call_id=str(text["call_id"]),
        agent=str(text["agent"]),
        direction="outbound" if text["direction"] == "outbound" else "inbound",
        caller=str(text["caller"]),
        callee=str(text["callee"]),
        carrier=str(text["carrier"]),
        carrier_call_id=str(text["carrier_call_id"]),
        exp=float(exp),
        nonce=str(text["nonce"]),
        origin=str(text["origin"]),
        variables={str(k): v for k, v in variables.items()},
        voicemail_message=voicemail,
        trace_id=trace_id,
    )


def new_nonce() -> str:
    """A token's single-use id."""
    return secrets.token_urlsafe(12)


class NonceLedger(Protocol):
    """Remembers used nonces until their token expires: a token admits one media socket, once."""

    async def use(self, nonce: str, exp: float) -> bool:
        """Mark `nonce` used; False when it already was (a replay)."""
        ...


class MemoryNonces:
    """The one-process ledger: used nonces in a dict, forgotten once their token has expired."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._used: dict[str, float] = {}
        self._clock = clock

    async def use(self, nonce: str, exp: float) -> bool:
        now = self._clock()
        if len(self._used) > 1024:  # prune now and then; expired ones can never be presented again
            self._used = {n: e for n, e in self._used.items() if e > now}
        if nonce in self._used:
            return False
        self._used[nonce] = exp
        return True
