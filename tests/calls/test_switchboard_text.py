"""Where a call is created, caller-supplied text is made storable: lone surrogates never reach a record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from patterd.calls.session import CallSpec
from patterd.calls.switchboard import Switchboard
from patterd.config import load_config_text
from patterd.graph import Graph, build_graph
from patterd.plugins import load_registry
from patterd.protocols.events import CallEvent, CallStarted, TranscriptLine
from patterd.providers.kinds import InboundCall
from tests.web.fake_runtime import serve_runtime

LONE = "\ud800"
CONFIG = """
carrier: {type: local}
agents:
  - name: desk
    stt: {type: offline}
    llm: {type: script}
    tts: {type: offline}
"""


@pytest.fixture
async def graph() -> AsyncIterator[Graph]:
    registry = load_registry()
    built = await build_graph(load_config_text(CONFIG, registry), registry, local_url="http://127.0.0.1:0")
    yield built
    await built.aclose()


async def test_admitted_numbers_and_transcripts_are_cleaned(graph: Graph) -> None:
    events: list[CallEvent] = []
    board = Switchboard(graph, emit=events.append)
    admission = board.admit(
        InboundCall(carrier="local", carrier_call_id="CA1", caller=f"+1{LONE}555", callee=LONE)
    )
    assert admission is not None
    started = events[0]
    assert isinstance(started, CallStarted)
    assert (started.caller, started.callee) == ("+1\ufffd555", "\ufffd")
    # An engine's transcript with a lone surrogate (JSON "\ud800" from an STT) reaches observers cleaned.
    session = board.calls[admission.call_id]
    session.emit(TranscriptLine(**session.new_event_fields(), role="user", text=f"hi{LONE}"))
    line = events[-1]
    assert isinstance(line, TranscriptLine) and line.text == "hi\ufffd"
    line.text.encode("utf-8")
    await board.end_all("test over")


async def test_variables_of_a_new_call_are_cleaned(graph: Graph) -> None:
    board = Switchboard(graph, emit=lambda e: None)
    spec = CallSpec(
        call_id="call-v",
        direction="inbound",
        carrier_name="local",
        carrier_call_id="",
        caller="+15550001111",
        callee="+15550002222",
        variables={LONE: f"x{LONE}"},
        voicemail_message=LONE,
    )
    board.open_call(spec, agent_name=None)
    assert dict(spec.variables) == {"\ufffd": "x\ufffd"} and spec.voicemail_message == "\ufffd"
    await board.end_all("test over")


async def test_softphone_webhook_with_a_lone_surrogate_keeps_the_call_list_working(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path) as served, aiohttp.ClientSession() as http:
        body = '{"to": "\\ud800"}'  # the JSON escape, as a hostile client sends it
        async with http.post(
            served.base_url + "/webhooks/local/voice",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 201, await resp.text()
            call_id = (await resp.json())["call_id"]
        for path in ("/api/v1/calls", f"/api/v1/calls/{call_id}"):
            async with http.get(served.base_url + path) as resp:
                assert resp.status == 200, await resp.text()
                json.loads(await resp.read())
        assert served.runtime.store.flush(10)
        meta_path = next((tmp_path / "records").glob(f"calls/*/*/*/{call_id}/metadata.json"))
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
        assert LONE not in meta["callee"]
