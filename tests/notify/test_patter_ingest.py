"""`POST /api/dashboard/ingest` on a real daemon: the Patter SDK's payloads become calls with their transcript."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.inprocess_daemon import running_daemon

TOKEN = "central-token-0123456789abcdef"
CONFIG = """
carrier: {{type: local}}
persist: {records}
server: {{dashboard_token: {token}}}
agents:
  - name: desk
    first_message: Hi.
    stt: {{type: offline, engine: pocketsphinx}}
    llm: {{type: script, intents: [{{name: hi, examples: [hello], reply: Hello.}}]}}
    tts: {{type: offline}}
"""


def sdk_metrics(call_id: str, duration: float) -> dict[str, Any]:
    """`dataclasses.asdict(CallMetrics)` as getpatter's handlers send it in the call-end payload."""
    latency = {
        "stt_ms": 120.0,
        "llm_ms": 300.0,
        "tts_ms": 90.0,
        "total_ms": 510.0,
        "llm_ttft_ms": 280.0,
        "llm_total_ms": 600.0,
        "endpoint_ms": 200.0,
        "bargein_ms": None,
        "tts_total_ms": 700.0,
        "agent_response_ms": 570.0,
    }
    turn = {
        "turn_index": 0,
        "user_text": "what are your opening hours",
        "agent_text": "Nine to five.",
        "latency": latency,
        "stt_audio_seconds": 1.5,
        "tts_characters": 13,
        "timestamp": time.time(),
    }
    return {
        "call_id": call_id,
        "duration_seconds": duration,
        "turns": [turn],
        "cost": {
            "stt": 0.001,
            "tts": 0.002,
            "llm": 0.003,
            "telephony": 0.01,
            "total": 0.016,
            "llm_cached_savings": 0.0,
        },
        "latency_avg": latency,
        "latency_p95": latency,
        "provider_mode": "pipeline",
        "stt_provider": "deepgram",
        "tts_provider": "elevenlabs",
        "llm_provider": "openai",
        "telephony_provider": "twilio",
        "latency_p50": latency,
        "latency_p90": latency,
        "latency_p99": latency,
    }


def sdk_start(call_id: str) -> dict[str, Any]:
    """What getpatter's twilio handler passes to on_call_start (and so POSTs)."""
    return {
        "call_id": call_id,
        "caller": "+15550001111",
        "callee": "+15550002222",
        "direction": "inbound",
        "custom_params": {"campaign": "spring"},
        "telephony_provider": "twilio",
    }


def sdk_end(call_id: str, ended_at: float) -> dict[str, Any]:
    """What getpatter's twilio handler passes to on_call_end: ended_at, transcript, metrics."""
    return {
        "call_id": call_id,
        "caller": "+15550001111",
        "callee": "+15550002222",
        "ended_at": ended_at,
        "transcript": [
            {"role": "user", "text": "what are your opening hours", "timestamp": ended_at - 3},
            {"role": "assistant", "text": "Nine to five.", "timestamp": ended_at - 2},
        ],
        "metrics": sdk_metrics(call_id, 4.5),
    }


@pytest.fixture
async def central(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    path = tmp_path / "patter.yaml"
    path.write_text(CONFIG.format(records=tmp_path / "records", token=TOKEN))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        running_daemon(path) as (_daemon, base_url, _task),
        aiohttp.ClientSession(headers=headers) as http,
    ):
        yield base_url, http


async def post(http: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    async with http.post(url, json=body, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_sdk_call_start_and_end_show_up_with_transcript(
    central: tuple[str, aiohttp.ClientSession],
) -> None:
    base, http = central
    assert await post(http, base + "/api/dashboard/ingest", sdk_start("CA-in-1")) == (
        200,
        {"ok": True, "call_id": "CA-in-1"},
    )
    async with http.get(base + "/api/v1/calls/CA-in-1") as resp:
        live = await resp.json()
    assert live["metadata"]["status"] == "in_progress"
    assert live["metadata"]["source"] == "patter-sdk"
    ended = time.time()
    status, answer = await post(http, base + "/api/dashboard/ingest", sdk_end("CA-in-1", ended))
    assert (status, answer) == (200, {"ok": True, "call_id": "CA-in-1", "event": "ended"})
    # The SDK retries nothing, but a repeated end must not add lines twice.
    assert (await post(http, base + "/api/dashboard/ingest", sdk_end("CA-in-1", ended)))[0] == 200
    async with http.get(base + "/api/v1/calls/CA-in-1") as resp:
        call = await resp.json()
    meta = call["metadata"]
    assert meta["status"] == "completed" and meta["duration_ms"] == 4500
    assert (meta["caller"], meta["callee"], meta["telephony_provider"]) == (
        "+15550001111",
        "+15550002222",
        "twilio",
    )
    assert [(t["role"], t["text"]) for t in call["transcript"]] == [
        ("user", "what are your opening hours"),
        ("assistant", "Nine to five."),
    ]
    async with http.get(base + "/api/v1/calls") as resp:
        listed = {c["call_id"]: c for c in (await resp.json())["calls"]}
    assert listed["CA-in-1"]["source"] == "patter-sdk" and listed["CA-in-1"]["turns"] == 2


async def test_outbound_initiated_then_answered_then_ended(
    central: tuple[str, aiohttp.ClientSession],
) -> None:
    base, http = central
    initiated = {
        "call_id": "CA-out-1",
        "caller": "+15550002222",
        "callee": "+15550003333",
        "direction": "outbound",
        "status": "initiated",
    }
    assert await post(http, base + "/api/dashboard/ingest", initiated) == (
        200,
        {"ok": True, "call_id": "CA-out-1", "event": "initiated"},
    )
    async with http.get(base + "/api/v1/calls/CA-out-1") as resp:
        meta = (await resp.json())["metadata"]
    assert (meta["status"], meta["direction"]) == ("ringing", "outbound")
    start = {
        "call_id": "CA-out-1",
        "caller": "+15550002222",
        "callee": "+15550003333",
        "direction": "outbound",
    }
    assert (await post(http, base + "/api/dashboard/ingest", start))[0] == 200
    async with http.get(base + "/api/v1/calls/CA-out-1") as resp:
        assert (await resp.json())["metadata"]["status"] == "in_progress"
    end = {**sdk_end("CA-out-1", time.time()), "transcript": [], "metrics": None}
    assert (await post(http, base + "/api/dashboard/ingest", end))[0] == 200
    async with http.get(base + "/api/v1/calls/CA-out-1") as resp:
        meta = (await resp.json())["metadata"]
    assert (meta["status"], meta["direction"]) == ("completed", "outbound")


async def test_an_end_without_a_start_is_a_whole_call(central: tuple[str, aiohttp.ClientSession]) -> None:
    base, http = central
    ended = time.time()
    assert (await post(http, base + "/api/dashboard/ingest", sdk_end("CA-late", ended)))[0] == 200
    async with http.get(base + "/api/v1/calls/CA-late") as resp:
        call = await resp.json()
    assert call["metadata"]["status"] == "completed"
    assert call["metadata"]["duration_ms"] == 4500
    assert len(call["transcript"]) == 2


BAD = [
    ({"caller": "+15550001111"}, "missing call_id"),
    ({"call_id": ""}, "missing call_id"),
    ([1, 2], "the body must be a JSON object"),
    ({"call_id": "../etc"}, "invalid call_id"),
    ({"call_id": "CA-bad", "ended_at": time.time(), "transcript": "hello"}, "transcript must be a list"),
    ({"call_id": "CA-bad", "ended_at": "yesterday"}, "ended_at must be unix seconds"),
    ({"call_id": "CA-bad", "ended_at": 1.0e9, "transcript": [{"role": "robot", "text": "x"}]}, "role"),
    ({"call_id": "CA-bad", "caller": 15550001111}, "caller must be a string"),
    (
        {"call_id": "CA-bad", "ended_at": 1.0e9, "status": "in_progress", "metrics": [1]},
        "metrics must be an object",
    ),
]


async def test_bad_payloads_are_refused_and_store_nothing(central: tuple[str, aiohttp.ClientSession]) -> None:
    base, http = central
    for body, error in BAD:
        status, answer = await post(http, base + "/api/dashboard/ingest", body)
        assert status == 400 and answer["ok"] is False and error in answer["error"], (body, answer)
    async with http.get(base + "/api/v1/calls") as resp:
        assert (await resp.json())["calls"] == []


async def test_token_rule_body_limit_and_not_json(central: tuple[str, aiohttp.ClientSession]) -> None:
    base, http = central
    async with aiohttp.ClientSession() as anonymous:  # a token is configured: loopback alone is not enough
        async with anonymous.post(base + "/api/dashboard/ingest", json=sdk_start("CA-anon")) as resp:
            assert resp.status == 401
    async with http.post(base + "/api/dashboard/ingest", data=b"{not json") as resp:
        assert resp.status == 400 and (await resp.json())["ok"] is False
    huge = {**sdk_end("CA-huge", time.time()), "transcript": [{"role": "user", "text": "x" * 2_000_000}]}
    async with http.post(base + "/api/dashboard/ingest", json=huge) as resp:
        assert resp.status == 413
    async with http.get(base + "/api/v1/calls") as resp:
        assert (await resp.json())["calls"] == []
