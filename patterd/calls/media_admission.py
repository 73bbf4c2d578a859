"""Media admission for the switchboard: which media socket may connect, and calls adopted from other replicas."""

from __future__ import annotations

import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import structlog

from patterd.calls.session import CallSession, CallSpec, CallState
from patterd.cluster.media_gate import MediaGate
from patterd.cluster.tokens import CallClaim

if TYPE_CHECKING:
    from patterd.graph import Graph

log = structlog.get_logger("patterd.switchboard")  # the switchboard's logger, as before this moved here


class MediaAdmission:
    """Mixin of Switchboard: admits a call's media socket here, by token when another replica answered it."""

    calls: dict[str, CallSession]
    gate: MediaGate
    graph: Graph

    if TYPE_CHECKING:  # provided by Switchboard

        def open_call(self, spec: CallSpec, agent_name: str | None) -> CallSession: ...

        def _spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...

        async def _close(self, session: CallSession, *, final: bool = True) -> None: ...

    def expects_media(self, call_id: str) -> bool:
        """True for a call we issued whose media has not connected yet."""
        session = self.calls.get(call_id)
        return session is not None and session.state is CallState.RINGING and not session.media_connected

    def adopts_media(self) -> bool:
        """True with a cluster secret: a call another replica answered may bring its media here."""
        return self.gate.shared

    async def admit_media(self, call_id: str, token: str | None) -> str | None:
        """Admit a media socket for `call_id`: None when admitted (`run_media` next), else why not.

        A ringing call of this process needs no token (a token it brings must be genuine and unused); a call
        this process never saw is opened from a valid token's claim: another replica answered its webhook.
        """
        if not token:
            return None if self.expects_media(call_id) else "unknown_call"
        verdict = await self.gate.check(call_id, token)  # a token is spent even on a call already connected
        if isinstance(verdict, str):
            return verdict
        if call_id in self.calls:
            return None if self.expects_media(call_id) else "unknown_call"
        self._adopt(verdict)
        return None

    def _adopt(self, claim: CallClaim) -> None:
        """Open a call answered by another replica from its token, and tell that replica."""
        known = claim.agent in self.graph.agents
        self.open_call(
            CallSpec(
                call_id=claim.call_id,
                direction=claim.direction,
                carrier_name=claim.carrier,
                carrier_call_id=claim.carrier_call_id,
                caller=claim.caller,
                callee=claim.callee,
                variables=dict(claim.variables),
                voicemail_message=claim.voicemail_message,
                trace_id=claim.trace_id or uuid.uuid4().hex,
            ),
            agent_name=claim.agent if known else None,
        )
        log.info("call adopted from its token", call_id=claim.call_id, origin=claim.origin or "?")
        notify = self.gate.on_adopted
        if notify is not None and claim.origin and claim.origin != self.gate.replica:
            self._spawn(notify(claim))

    def hand_over(self, call_id: str) -> bool:
        """Another replica took this ringing call's media: forget it here without ending it."""
        session = self.calls.get(call_id)
        if session is None or not self.expects_media(call_id):
            return False
        log.info("call handed over to another replica", call_id=call_id)
        self._spawn(self._close(session, final=False))
        return True
