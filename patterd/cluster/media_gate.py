"""The media gate: issues a call's token with its answer and checks the token a media socket brings."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from patterd.cluster.tokens import (
    CallClaim,
    CallTokens,
    MemoryNonces,
    NonceLedger,
    TokenError,
    TokenReason,
    new_nonce,
    resolve_secret,
)
from patterd.providers.kinds import CALL_TOKEN

if TYPE_CHECKING:
    from patterd.calls.session import CallSpec

log = structlog.get_logger("patterd.cluster")

TOKEN_PARAMETER = CALL_TOKEN  # the name of the stream parameter / websocket query key carrying it


class MediaGate:
    """Tokens under the cluster secret, plus the ledger that makes each one single-use."""

    def __init__(
        self,
        tokens: CallTokens,
        nonces: NonceLedger | None = None,
        *,
        replica: str = "",
        shared: bool = False,
    ) -> None:
        self.tokens = tokens
        self.nonces: NonceLedger = nonces or MemoryNonces()
        self.replica = replica
        self._fallback = MemoryNonces()
        self.shared = shared  # the secret is the cluster's (config/env), not this process's random one
        # Told when this replica opened a call another replica answered (that one drops its ringing copy).
        self.on_adopted: Callable[[CallClaim], Coroutine[Any, Any, None]] | None = None

    @classmethod
    def from_secret(cls, secret: str | None, *, replica: str = "") -> MediaGate:
        """A gate under `secret`, else $PATTERD_CLUSTER_SECRET, else a random secret of this process."""
        key, shared = resolve_secret(secret)
        return cls(CallTokens(key), replica=replica, shared=shared)

    def token_for(self, spec: CallSpec, agent: str) -> str:
        """A fresh single-use token for a call answered here, carrying what opening it elsewhere needs."""
        claim = CallClaim(
            call_id=spec.call_id,
            agent=agent,
            direction="outbound" if spec.direction == "outbound" else "inbound",
            caller=spec.caller,
            callee=spec.callee,
            carrier=spec.carrier_name,
            carrier_call_id=spec.carrier_call_id,
            exp=self.tokens.expiry(spec.direction),
            nonce=new_nonce(),
            origin=self.replica,
            variables=dict(spec.variables),
            voicemail_message=spec.voicemail_message,
            trace_id=spec.trace_id,
        )
        return self.tokens.issue(claim)

    async def check(self, call_id: str, token: str) -> CallClaim | TokenReason:
        """The claim of a genuine, fresh, unused token for `call_id`, or why it admits nothing."""
        try:
            claim = self.tokens.verify(token)
        except TokenError as exc:
            log.warning("media token refused", call_id=call_id, reason=exc.reason, detail=str(exc))
            return exc.reason
        if claim.call_id != call_id:  # a genuine token for another call's socket
            log.warning("media token refused", call_id=call_id, reason="token_invalid", detail="other call")
            return "token_invalid"
        try:
            fresh = await self.nonces.use(claim.nonce, claim.exp)
        except Exception as exc:  # the shared ledger (Redis) is down: replays are checked in this process
            log.warning("nonce ledger unavailable; checking replays in this process", error=str(exc))
            fresh = await self._fallback.use(claim.nonce, claim.exp)
        if not fresh:
            log.warning("media token refused", call_id=call_id, reason="token_replayed")
            return "token_replayed"
        return claim
