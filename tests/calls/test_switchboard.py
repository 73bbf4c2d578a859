"""The switchboard: routing to agents, refusing while draining, retried webhooks, calls that never connect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from patterd.calls.switchboard import Switchboard
from patterd.config import load_config_text
from patterd.errors import CallError
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


@pytest.fixture
async def graph(tmp_path: Path) -> AsyncIterator[Graph]:
    registry = load_registry()
    built = await build_graph(load_config_text(CONFIG, registry), registry, local_url="http://127.0.0.1:0")
    yield built
    await built.aclose()


def inbound(callee: str, carrier_call_id: str = "CA1") -> InboundCall:
    return InboundCall(carrier="local", carrier_call_id=carrier_call_id, caller="+15550009999", callee=callee)


async def test_routes_by_number_else_first_agent(graph: Graph) -> None:
    events: list[CallEvent] = []
    board = Switchboard(graph, emit=events.append)
    a = board.admit(inbound("+15550002222", "CA1"))
    b = board.admit(inbound("+15550003333", "CA2"))
    assert a is not None and b is not None
    assert (a.agent, b.agent) == ("second", "first")
    assert [type(e) for e in events] == [CallStarted, CallStarted]
    # A retried webhook for the same carrier call gets the same call id, not a second call.
    again = board.admit(inbound("+15550002222", "CA1"))
    assert again is not None and again.call_id == a.call_id and len(board.calls) == 2
    await board.end_all("test over")


async def test_draining_refuses_new_calls(graph: Graph) -> None:
    board = Switchboard(graph, emit=lambda e: None)
    board.draining = True
    assert board.admit(inbound("+15550002222")) is None
    with pytest.raises(CallError, match="draining"):
        await board.place_call("+15550001111")


async def test_media_that_never_connects_ends_the_call(graph: Graph) -> None:
    ended = asyncio.Event()
    events: list[CallEvent] = []

    def emit(event: CallEvent) -> None:
        events.append(event)
        if isinstance(event, CallEnded):
            ended.set()

    board = Switchboard(graph, emit=emit)
    board.media_timeouts["inbound"] = 0.05
    admission = board.admit(inbound("+15550002222"))
    assert admission is not None and board.expects_media(admission.call_id)
    await asyncio.wait_for(ended.wait(), 5)
    end = next(e for e in events if isinstance(e, CallEnded))
    assert end.status == "failed" and end.error == "media stream never connected"
    await asyncio.sleep(0)  # let the close task run
    assert not board.expects_media(admission.call_id)
    assert graph.users == 0


async def test_calls_over_max_calls_are_refused_and_counted() -> None:
    registry = load_registry()
    config = load_config_text("server: {max_calls: 2}\n" + CONFIG, registry)
    built = await build_graph(config, registry, local_url="http://127.0.0.1:0")
    try:
        board = Switchboard(built, emit=lambda e: None)
        first, second = (
            board.admit(inbound("+15550002222", "CA1")),
            board.admit(inbound("+15550002222", "CA2")),
        )
        assert first is not None and second is not None and board.at_capacity
        assert board.admit(inbound("+15550002222", "CA3")) is None
        retried = board.admit(inbound("+15550002222", "CA1"))  # a retried webhook is no new call
        assert retried is not None and retried.call_id == first.call_id
        with pytest.raises(CallError, match="max_calls"):
            await board.place_call("+15550001111")
        assert board.refused == {("local", "max_calls"): 2}
        await board.hangup(first.call_id)
        await asyncio.sleep(0)  # let the close task run
        assert not board.at_capacity and board.admit(inbound("+15550002222", "CA4")) is not None
        await board.end_all("test over")
    finally:
        await built.aclose()
