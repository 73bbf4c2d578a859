"""Vonage calls end to end against the real patterd process (the scenario verbs of test_more_carriers).

An inbound call (first message heard, DTMF, a turn with a tool, barge-in — on Vonage the agent's audio
stops, there is no clear message — end_call → PUT /v1/calls/{uuid} hangup, the record), an outbound call
(POST /v1/calls with our answer_url, answer, greeting heard, far-end hangup), and a forged webhook JWT
and a media socket without its token refused. Every agent frame the fake received was 640 bytes of L16.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.daemon_process import DaemonProcess, run_daemon
from tests.e2e.scenarios import Api, ToolServer, daemon_config, engine_server, read_jsonl, wait_record
from tests.e2e.vonage_carrier import VonageCarrier
from tests.fakes.openai_realtime import CallTool, FakeRealtimeServer, Say
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TURN = "I would like to check on my order please."
GREETING = "Thanks for calling Acme!"
REPLY = "Good news, your order forty two has shipped and it will arrive tomorrow morning. Anything else?"
OUTBOUND_TO = "+15557654321"


@dataclass
class World:
    carrier: VonageCarrier
    engine: FakeRealtimeServer
    tool: ToolServer
    daemon: DaemonProcess
    api: Api
    records: Path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("vonage")
    carrier = VonageCarrier()
    await carrier.start()
    tool = ToolServer()
    await tool.start()
    async with engine_server() as engine:
        config = tmp / "patter.yaml"
        config.write_text(daemon_config(carrier, engine.url, tool.url, tmp / "records"))
        cm = run_daemon(config)
        daemon = await asyncio.to_thread(cm.__enter__)
        try:
            await carrier.attach(daemon.base_url)
            async with Api(daemon.base_url) as api:
                yield World(carrier, engine, tool, daemon, api, tmp / "records")
        finally:
            await carrier.detach()
            await asyncio.to_thread(cm.__exit__, None, None, None)
            await carrier.close()
            await tool.close()


async def test_inbound_call_end_to_end(world: World) -> None:
    world.engine.replies[:] = [
        Say(GREETING),
        Say("Okay."),
        CallTool("lookup_order", {"order_number": "42"}),
        Say(REPLY),
        CallTool("end_call", {"reason": "caller is done"}),
        Say("Goodbye!"),
    ]
    world.engine.transcripts[:] = [TURN, "That is all."]
    turn, more = spoken_ulaw(TURN), spoken_ulaw("That is all, thank you very much.")
    call = await world.carrier.inbound_call()
    await call.wait_heard(4000, timeout=10)  # the first message
    greeting = call.heard_bytes()
    await call.send_dtmf("5")
    await world.engine.wait_for(lambda: "caller pressed 5" in world.engine.user_texts, timeout=5)
    await call.wait_heard(greeting + 1600, timeout=5)  # "Okay."
    await asyncio.sleep(0.5)  # let it finish playing so the turn does not barge in on it
    await call.say(turn)
    await world.engine.wait_for(lambda: bool(world.engine.tool_outputs), timeout=10)
    assert world.tool.received == [{"order_number": "42"}]
    await call.wait_heard(call.heard_bytes() + 8000, timeout=10)  # a second of the reply
    await call.say(more)  # barge-in: the daemon stops sending (Vonage has no clear message)
    cleared_at = await call.wait_for_clear(timeout=5)
    reaction_ms = round((cleared_at - call.speech_started()[-1]) * 1000, 1)
    print(f"\n[{world.carrier.name}] barge-in: speech start → agent audio stopped {reaction_ms} ms")
    assert reaction_ms <= 1000  # sanity; the latency target is test_calls' to report
    await call.wait_hung_up_by_daemon(timeout=15)  # end_call → the carrier's REST hangup
    assert not call.violations()

    directory = await wait_record(world.records, call.call_id, "completed")
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["telephony_provider"] == world.carrier.name and meta["error"] in (None, "")
    assert meta["cost"]["telephony"] > 0  # billed per minute from the spec's prices
    transcript = read_jsonl(directory / "transcript.jsonl")
    assert next(line["text"] for line in transcript if line["role"] == "user") == TURN
    assert any(GREETING in line["text"] for line in transcript if line["role"] == "assistant")
    types = [e["type"] for e in read_jsonl(directory / "events.jsonl")]
    for wanted in ("call_started", "dtmf", "tool_call", "barge_in", "call_ended"):
        assert wanted in types, (wanted, types)


async def test_outbound_call_and_far_end_hangup(world: World) -> None:
    world.engine.replies[:] = [Say(GREETING)]
    status, body = await world.api.request("POST", "/api/v1/calls", {"to": OUTBOUND_TO})
    assert status == 201, body
    call_id = body["call_id"]
    dial = world.carrier.dial_request()
    assert dial["answer_method"] == "POST" and call_id in dial["answer_url"][0]
    assert dial["to"] == [{"type": "phone", "number": OUTBOUND_TO.lstrip("+")}]
    call = await world.carrier.answer_outbound(OUTBOUND_TO)
    await call.wait_heard(4000, timeout=10)
    await call.hangup_from_far_end()
    directory = await wait_record(world.records, call_id, "completed")
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["direction"] == "outbound" and meta["error"] in (None, "")
    assert world.carrier.hangup_requests(call) == 0


async def test_forged_webhook_and_tokenless_media_are_refused(world: World) -> None:
    def counted(line: str) -> bool:
        return world.carrier.name in line

    before = await world.api.metric("patterd_webhook_rejections_total", counted)
    assert await world.carrier.send_bad_signature() == 403
    outcome = await world.carrier.open_media("call_00000000000000000000000000000000")
    assert outcome is not None and outcome >= 400, outcome
    assert await world.api.metric("patterd_webhook_rejections_total", counted) == before + 2
