"""A Twilio call through the real daemon with `engine.elevenlabs_convai`: greeting, a client tool, a barge-in, end_call.

The daemon fetches a signed URL for the private agent (FakeConvAIServer), opens the conversation
with the agent's prompt, first message and variables, streams the caller's μ-law audio as
`user_audio_chunk`s, runs the agent's `lookup_order` client tool call as the patterd webhook tool,
clears the carrier when the agent reports an `interruption`, and hangs up after `end_call`. The
record holds the transcript (the cut reply marked interrupted), turn latency split into engine
and transport, and the agent minutes' cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from tests.daemon_process import run_daemon
from tests.e2e.scenarios import (
    NUMBER,
    PUBLIC_HOST,
    Api,
    ToolServer,
    TwilioCarrier,
    TwilioHandle,
    read_jsonl,
    wait_record,
)
from tests.fakes.elevenlabs_convai import AGENT_ID, API_KEY, CallTool, FakeConvAIServer, Reply, Say
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e]

GREETING = "Thanks for calling Acme!"
TURN_1 = "I would like to check on my order please."
TURN_2 = "That is all, thank you."
ORDER_REPLY = (
    "Good news, your order forty two has shipped and it will arrive tomorrow morning. "
    "Is there anything else I can help you with today? We also have a sale this week on every item."
)


def config(carrier: TwilioCarrier, engine_url: str, tool_url: str, records: Path) -> str:
    return (
        carrier.config()
        + f"""phone_number: "{NUMBER}"
webhook_url: {PUBLIC_HOST}
persist: {records}
server: {{drain_timeout_secs: 5}}
agents:
  - name: concierge
    engine:
      type: elevenlabs_convai
      agent_id: {AGENT_ID}
      base_url: {engine_url}
      max_retries: 1
      retry_backoff_secs: 0.05
      connect_timeout_secs: 3
    system_prompt: You are a friendly concierge for {{company}}.
    first_message: Thanks for calling {{company}}!
    variables: {{company: Acme}}
    tools:
      - {{type: end_call}}
      - type: webhook
        name: lookup_order
        description: Look up an order by number.
        parameters: {{type: object, properties: {{order_number: {{type: string}}}}, required: [order_number]}}
        url: {tool_url}
        timeout_secs: 3
"""
    )


async def test_convai_twilio_call(tmp_path: Path) -> None:
    carrier = TwilioCarrier()
    await carrier.start()
    tool = ToolServer()
    await tool.start()
    replies: list[Reply] = [
        CallTool("lookup_order", {"order_number": "42"}),
        Say(ORDER_REPLY),
        CallTool("end_call", {"reason": "caller is done"}),
        Say("Goodbye!"),
    ]
    stack = contextlib.AsyncExitStack()
    try:
        fake = await stack.enter_async_context(
            FakeConvAIServer(replies=replies, transcripts=[TURN_1, TURN_2], pace=3, ping_secs=0.5)
        )
        path = tmp_path / "patter.yaml"
        path.write_text(config(carrier, fake.http_url, tool.url, tmp_path / "records"))
        env = {
            "ELEVENLABS_API_KEY": API_KEY,
            "TWILIO_ACCOUNT_SID": carrier.rest.account_sid,
            "TWILIO_AUTH_TOKEN": carrier.rest.auth_token,
        }
        speech = {"turn1": spoken_ulaw(TURN_1), "turn2": spoken_ulaw(TURN_2)}
        cm = run_daemon(path, env=env)
        daemon = await asyncio.to_thread(cm.__enter__)
        stack.push_async_callback(asyncio.to_thread, cm.__exit__, None, None, None)
        await carrier.attach(daemon.base_url)
        stack.push_async_callback(carrier.detach)
        api = await stack.enter_async_context(Api(daemon.base_url))

        call = await carrier.inbound_call()
        assert isinstance(call, TwilioHandle)
        # The greeting (first_message override) plays out and is written before the caller speaks.
        await api.wait_call(call.call_id, lambda b: any(t["role"] == "assistant" for t in b["transcript"]))
        assert call.heard_bytes() >= 4000

        # Turn 1 → user_transcript → client_tool_call lookup_order → the webhook → the reply plays.
        await call.say(speech["turn1"])
        await fake.wait_for(lambda: len(fake.tool_results) == 1, timeout=15)
        assert tool.received == [{"order_number": "42"}]
        assert json.loads(fake.tool_results[0]["result"]) == {"status": "shipped", "eta": "tomorrow"}
        heard = call.heard_bytes()
        await call.wait_heard(heard + 8000, timeout=15)  # a second of the order reply has played

        # Turn 2 talks over the reply: interruption → the carrier is cleared.
        await call.say(speech["turn2"])
        cleared_at = await call.wait_for_clear(timeout=10)
        reaction_ms = (cleared_at - call.speech_started()[-1]) * 1000

        # end_call: the goodbye, then the daemon hangs up through Twilio's REST.
        await call.wait_hung_up_by_daemon(timeout=20)
        directory = await wait_record(tmp_path / "records", call.call_id, "completed", timeout=15)
        assert not call.violations()
    finally:
        await stack.aclose()
        await tool.close()
        await carrier.close()

    init = fake.initiations[0]
    assert init["conversation_config_override"]["agent"] == {
        "prompt": {"prompt": "You are a friendly concierge for Acme."},
        "first_message": GREETING,
    }
    assert init["dynamic_variables"] == {"company": "Acme"}
    assert fake.requests[0] == ("GET", "/v1/convai/conversation/get-signed-url")
    assert fake.interruptions == 1 and fake.bad_pongs == 0 and fake.pong_ms
    assert [r["is_error"] for r in fake.tool_results] == [False, False]

    transcript = read_jsonl(directory / "transcript.jsonl")
    users = [line["text"] for line in transcript if line["role"] == "user"]
    assistants = [line for line in transcript if line["role"] == "assistant"]
    assert users == [TURN_1, TURN_2]
    assert assistants[0]["text"] == GREETING
    cut = [line for line in assistants if line.get("interrupted")]
    assert cut and cut[0]["text"].startswith("Good news"), assistants
    assert len(cut[0]["text"]) < len(ORDER_REPLY), cut  # what was said before the cut (the correction)
    timed = [line for line in assistants if line.get("latency_ms") is not None]
    assert timed, assistants
    for line in timed:  # the engine's share and the carrier's add up to the turn's latency
        assert line["engine_ms"] > 0 and line["transport_ms"] >= 0, line
        assert line["engine_ms"] + line["transport_ms"] == pytest.approx(line["latency_ms"], abs=0.05)
    events = read_jsonl(directory / "events.jsonl")
    types = [e["type"] for e in events]
    for wanted in ("tool_call", "barge_in", "usage", "call_ended"):
        assert wanted in types, (wanted, types)
    assert [e["data"]["name"] for e in events if e["type"] == "tool_call"] == ["lookup_order", "end_call"]
    meta = json.loads((directory / "metadata.json").read_text())
    assert meta["cost"]["llm"] > 0, meta["cost"]
    print(
        f"\n[elevenlabs_convai] barge-in: speech start → clear {reaction_ms:.0f} ms; "
        f"turn latency {[(t['latency_ms'], t['engine_ms'], t['transport_ms']) for t in timed]}; "
        f"pong {max(fake.pong_ms):.1f} ms; cost {meta['cost']}"
    )
