"""The switchboard's media admission by call token: another replica's call is opened from its token, once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from patterd.calls.switchboard import Switchboard
from patterd.cluster.media_gate import TOKEN_PARAMETER, MediaGate
from patterd.cluster.tokens import CallClaim, CallTokens
from patterd.config import load_config_text
from patterd.graph import Graph, build_graph
from patterd.plugins import load_registry
from patterd.protocols.events import CallEnded, CallEvent, CallStarted
from patterd.providers.kinds import InboundCall

CONFIG = """
carrier: {type: local}
agents:
  - name: first
    stt: {type: offline}
    llm: {type: script}
    tts: {type: offline}
  - name: second
    phone_number: "+15550002222"
    stt: {type: offline}
    llm: {type: script}
    tts: {type: offline}
"""
SECRET = b"the-shared-cluster-secret-0123456"


@pytest.fixture
async def graph(tmp_path: Path) -> AsyncIterator[Graph]:
    registry = load_registry()
    built = await build_graph(load_config_text(CONFIG, registry), registry, local_url="http://127.0.0.1:0")
    yield built
    await built.aclose()


def board(graph: Graph, replica: str, events: list[CallEvent], secret: bytes = SECRET) -> Switchboard:
    return Switchboard(graph, emit=events.append, gate=MediaGate(CallTokens(secret), replica=replica))


def inbound() -> InboundCall:
    return InboundCall(carrier="local", carrier_call_id="CA9", caller="+15550009999", callee="+15550002222")


async def test_a_call_answered_by_a_opens_on_b_from_its_token(graph: Graph) -> None:
    a_events: list[CallEvent] = []
    b_events: list[CallEvent] = []
    a, b = board(graph, "a", a_events), board(graph, "b", b_events)
    told: list[CallClaim] = []

    async def adopted(claim: CallClaim) -> None:
        told.append(claim)
        a.hand_over(claim.call_id)  # what the cluster's control channel does on replica a

    b.gate.on_adopted = adopted
    admission = a.admit(inbound())
    assert admission is not None
    token = admission.parameters[TOKEN_PARAMETER]
    assert await b.admit_media(admission.call_id, "not-a-token") == "token_invalid"
    assert await b.admit_media(admission.call_id, None) == "unknown_call"  # b never rang it
    assert await b.admit_media(admission.call_id, token) is None
    session = b.calls[admission.call_id]
    assert (session.agent.name, session.spec.caller, session.spec.carrier_call_id) == (
        "second",
        "+15550009999",
        "CA9",
    )
    started = [e for e in b_events if isinstance(e, CallStarted)]
    assert [e.call_id for e in started] == [admission.call_id]
    for _ in range(50):  # the hand-over runs as a task on a
        if admission.call_id not in a.calls:
            break
        await asyncio.sleep(0.01)
    assert [c.origin for c in told] == ["a"] and admission.call_id not in a.calls
    assert not any(isinstance(e, CallEnded) for e in a_events)  # handed over, not ended: b owns the record
    await b.end_all("test over")
    await asyncio.sleep(0)


async def test_replayed_and_foreign_tokens_are_refused(graph: Graph) -> None:
    a, b = board(graph, "a", []), board(graph, "b", [])
    b.gate.nonces = a.gate.nonces  # one ledger, as Redis gives every replica
    stranger = board(graph, "c", [], secret=b"some-other-secret-entirely-12345")
    admission = a.admit(inbound())
    assert admission is not None
    token = admission.parameters[TOKEN_PARAMETER]
    assert await stranger.admit_media(admission.call_id, token) == "token_invalid"
    assert await b.admit_media(admission.call_id, token) is None
    assert await b.admit_media(admission.call_id, token) == "token_replayed"
    assert await a.admit_media(admission.call_id, token) == "token_replayed"
    await a.end_all("test over")
    await b.end_all("test over")


async def test_a_ringing_call_without_a_token_is_admitted_as_before(graph: Graph) -> None:
    a = board(graph, "a", [])
    admission = a.admit(inbound())
    assert admission is not None
    assert await a.admit_media(admission.call_id, None) is None
    assert await a.admit_media(admission.call_id, "") is None
    await a.end_all("test over")
