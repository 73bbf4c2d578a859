"""What a call is: its spec when admitted, its state, the live view the web reads, prompt filling."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patterd.config import AgentConfig


class CallState(enum.Enum):
    """Where a call is in its life."""

    RINGING = "ringing"  # admitted or dialled; waiting for the media stream
    CONNECTED = "connected"  # media flowing, engine running
    ENDING = "ending"  # hang-up decided; finishing playout, closing the engine
    ENDED = "ended"  # final status recorded; nothing more happens


@dataclass
class CallSpec:
    """What is known about a call when it is admitted or placed."""

    call_id: str
    direction: str  # inbound | outbound
    carrier_name: str
    carrier_call_id: str
    caller: str
    callee: str
    variables: Mapping[str, str] = field(default_factory=dict)
    voicemail_message: str | None = None
    trace_id: str = ""


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A read-only view of a live call for the web layer (taken at one instant)."""

    call_id: str
    agent: str
    state: CallState
    status: str
    direction: str
    carrier: str

    def as_dict(self) -> dict[str, Any]:
        """The API's JSON shape of a live call."""
        return {
            "call_id": self.call_id,
            "agent": self.agent,
            "state": self.state.value,
            "status": self.status,
            "direction": self.direction,
            "carrier": self.carrier,
        }


def prompts(agent: AgentConfig, spec: CallSpec) -> tuple[dict[str, str], str, str | None]:
    """(variables, instructions, first message) of a call: the agent's prompts with the call's variables filled."""
    variables = {**agent.variables, **spec.variables}
    first = fill(agent.first_message, variables) if agent.first_message else None
    if agent.recording_notice:  # spoken first, as the opening of the first message
        notice = agent.recording_notice.strip()
        first = f"{notice} {first}" if first else notice
    return variables, fill(agent.system_prompt, variables), first


def fill(template: str, variables: Mapping[str, str]) -> str:
    """Replace `{name}` placeholders with variables; unknown placeholders stay as written."""

    class _Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return template.format_map(_Keep(variables))
    except (ValueError, IndexError):  # stray braces in a prompt: leave the text alone
        return template
