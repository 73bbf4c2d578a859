"""One end-to-end call script for every carrier: the six built in and the sample plugin's.

First message, DTMF, two turns (the first calls a webhook tool), a barge-in, end_call → the daemon hangs
up the carrier's way, and the record on disk — the same verbs on every carrier's fake
(`patterd.testing.carrier.CarrierCall`), against the real patterd process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from patterd.testing.carrier_suite import wait_quiet
from tests.carriers.world import DRIVERS, World, named_world
from tests.concurrent import cancelled_at_exit, selected
from tests.e2e.scenarios import read_jsonl, wait_record
from tests.fakes.openai_realtime import CallTool, Say, speak_pcm24
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

GREETING = "Thanks for calling Acme!"
TURN_1 = "I would like to check on my order please."
TURN_2 = "That is all, thank you."
REPLY = "Good news, your order forty two has shipped and it will arrive tomorrow morning. Anything else?"
AGENT_LINES = (GREETING, "Okay.", REPLY, "Goodbye!")
_caller_audio: dict[str, bytes] = {}  # TURN_1, TURN_2 spoken: rendered once, before the scripts run


def _render_speech() -> None:
    """espeak-ng every line up front: a render inside one script would stall the loop the others play on."""
    for line in AGENT_LINES:
        speak_pcm24(line)
    for turn in (TURN_1, TURN_2):
        _caller_audio[turn] = spoken_ulaw(turn)


class _Gate:
    """Opens once every world has started (or failed to): no script runs beside a daemon still starting."""

    def __init__(self, count: int) -> None:
        self._left = count
        self.open = asyncio.Event()

    def arrive(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self.open.set()


async def _world_and_script(name: str, tmp: Path, gate: _Gate) -> str:
    """Start the carrier's world, run the call script once every world is up, stop the world."""
    arrived = False
    try:
        async with named_world(name, tmp) as world:
            gate.arrive()
            arrived = True
            await gate.open.wait()
            return await call_script(world)
    finally:
        if not arrived:
            gate.arrive()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scripts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, asyncio.Task[str]]]:
    """Each selected carrier's script, all running at once (each its own daemon and fakes).

    The script spends its time in real-time audio (greeting, turns, the reply, goodbye), so seven in turn
    waited seven times as long; each test still reports its own carrier's result.
    """
    names = selected(request, "test_call_script", "carrier")
    await asyncio.to_thread(_render_speech)
    gate = _Gate(len(names))
    tasks = {
        name: asyncio.create_task(_world_and_script(name, tmp_path_factory.mktemp(name), gate))
        for name in names
    }
    async with cancelled_at_exit(tasks):
        yield tasks


@pytest.mark.parametrize("carrier", list(DRIVERS))
async def test_call_script(scripts: dict[str, asyncio.Task[str]], carrier: str) -> None:
    print(await scripts[carrier])


async def call_script(world: World) -> str:
    """The script on one carrier's world; returns its barge-in figure (AssertionError when it fails)."""
    engine, name = world.engine, world.driver.name
    engine.replies[:] = [
        Say(GREETING),
        Say("Okay."),  # answers the key press
        CallTool("lookup_order", {"order_number": "42"}),
        Say(REPLY),
        CallTool("end_call", {"reason": "caller is done"}),
        Say("Goodbye!"),
    ]
    engine.transcripts[:] = [TURN_1, TURN_2]
    call = await world.driver.inbound_call()

    await call.wait_heard(4000, timeout=10)  # the first message
    await wait_quiet(call)
    heard = call.heard_bytes()
    await call.send_dtmf("5")
    await engine.wait_for(lambda: any("5" in text for text in engine.user_texts), timeout=5)
    await call.wait_heard(heard + 1600, timeout=5)  # "Okay."
    await wait_quiet(call)  # so turn 1 does not barge in on it

    await call.say(_caller_audio[TURN_1])  # turn 1 → the webhook tool → the reply
    await engine.wait_for(lambda: bool(engine.tool_outputs), timeout=10)
    assert world.tool.received == [{"order_number": "42"}]
    await call.wait_heard(call.heard_bytes() + 8000, timeout=10)  # a second of the reply

    await call.say(_caller_audio[TURN_2])  # turn 2 barges in on the reply
    cleared_at = await call.wait_for_clear(timeout=5)
    reaction_ms = round((cleared_at - call.speech_started()[-1]) * 1000, 1)
    figure = f"\n[{name}] barge-in: speech start → playback cleared {reaction_ms} ms"
    assert reaction_ms <= 1000  # sanity; test_calls reports the latency target

    await call.wait_hung_up_by_daemon(timeout=15)  # end_call → the carrier's hangup
    assert not call.violations(), call.violations()

    directory = await wait_record(world.records, call.call_id, "completed")
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["telephony_provider"] == name and meta["direction"] == "inbound", meta
    assert meta["error"] in (None, "") and meta["duration_ms"] > 0, meta
    assert "telephony" in meta["cost"] and meta["cost"]["llm"] > 0, meta["cost"]
    transcript = read_jsonl(directory / "transcript.jsonl")
    assert [line["text"] for line in transcript if line["role"] == "user"] == [TURN_1, TURN_2]
    assistant = [line for line in transcript if line["role"] == "assistant"]
    assert any(GREETING in line["text"] for line in assistant), assistant
    assert any(line.get("interrupted") for line in assistant), assistant
    events = read_jsonl(directory / "events.jsonl")
    types = [e["type"] for e in events]
    for wanted in ("call_started", "dtmf", "tool_call", "barge_in", "call_ended"):
        assert wanted in types, (wanted, types)
    assert [e["data"]["name"] for e in events if e["type"] == "tool_call"] == ["lookup_order", "end_call"]
    assert [e["data"].get("digit") for e in events if e["type"] == "dtmf"] == ["5"]
    return figure
