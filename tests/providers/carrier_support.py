"""The scripted CallRouter of the Twilio tests, with media admission (`admit_media`) for carriers that use it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from patterd.providers.kinds import CALL_TOKEN, Admission, InboundCall
from tests.providers.test_twilio import ScriptedRouter, next_event

__all__ = ["AdmittingRouter", "next_event"]


@dataclass
class AdmittingRouter(ScriptedRouter):
    """Admits a media socket for a call it issued and has not connected (no cluster: tokens only recorded)."""

    media_tokens: list[str | None] = field(default_factory=list)

    def admit(self, call: InboundCall) -> Admission | None:
        """ScriptedRouter's admission, plus a call token (`tok-<call id>`) the media socket must bring back."""
        admission = super().admit(call)
        if admission is None:
            return None
        return replace(admission, parameters={**admission.parameters, CALL_TOKEN: f"tok-{admission.call_id}"})

    async def admit_media(self, call_id: str, token: str | None) -> str | None:
        self.media_tokens.append(token)
        return None if self.expects_media(call_id) else "unknown_call"
