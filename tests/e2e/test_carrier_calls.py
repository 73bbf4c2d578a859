"""One end-to-end call script for every carrier: the six built in and the sample plugin's.

First message, DTMF, two turns (the first calls a webhook tool), a barge-in, end_call → the daemon hangs
up the carrier's way, and the record on disk — the same verbs on every carrier's fake
(`patterd.testing.carrier.CarrierCall`), against the real patterd process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from patterd.testing.carrier_suite import wait_quiet
from tests.carriers.world import DRIVERS, World, named_world
from tests.e2e.scenarios import read_jsonl, wait_record
from tests.fakes.openai_realtime import CallTool, Say
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

GREETING = "Thanks for calling Acme!"
TURN_1 = "I would like to check on my order please."
TURN_2 = "That is all, thank you."
REPLY = "Good news, your order forty two has shipped and it will arrive tomorrow morning. Anything else?"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=list(DRIVERS))
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    async with named_world(request.param, tmp_path_factory.mktemp(request.param)) as world:
        yield world


async def test_call_script(world: World) -> None:
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

    await call.say(spoken_ulaw(TURN_1))  # turn 1 → the webhook tool → the reply
    await engine.wait_for(lambda: bool(engine.tool_outputs), timeout=10)
    assert world.tool.received == [{"order_number": "42"}]
    await call.wait_heard(call.heard_bytes() + 8000, timeout=10)  # a second of the reply

    await call.say(spoken_ulaw(TURN_2))  # turn 2 barges in on the reply
    cleared_at = await call.wait_for_clear(timeout=5)
    reaction_ms = round((cleared_at - call.speech_started()[-1]) * 1000, 1)
    print(f"\n[{name}] barge-in: speech start → playback cleared {reaction_ms} ms")
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
