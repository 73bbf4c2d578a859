"""The Rime fake is faithful to the ws3 JSON docs: their example client's exchange, contexts, clear, refusals.

Rime publishes no official Python SDK; the docs' example client (the `websockets` library, JSON
messages, base64 `chunk` data, `word_timestamps`) is run here against the fake instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import websockets

from patterd.testing import wait_until
from tests.fakes.rime import FakeRimeServer

KEY = "rime-test-key"
QUERY = "speaker=astra&modelId=arcana&audioFormat=mulaw&samplingRate=8000"


async def exchange(
    fake: FakeRimeServer, messages: list[dict[str, Any]]
) -> tuple[bytes, list[dict[str, Any]]]:
    """The docs' example client: send every message, collect events until the server closes."""
    events: list[dict[str, Any]] = []
    audio = b""
    async with websockets.connect(
        f"{fake.base_url}/ws3?{QUERY}", additional_headers={"Authorization": f"Bearer {KEY}"}
    ) as ws:
        for message in messages:
            await ws.send(json.dumps(message))
        while True:
            try:
                raw = await ws.recv()
            except websockets.exceptions.ConnectionClosedOK:
                break
            event = json.loads(raw)
            events.append(event)
            if event["type"] == "chunk":
                audio += base64.b64decode(event["data"])
    return audio, events


async def test_the_docs_example_exchange_clear_then_eos() -> None:
    async with FakeRimeServer(KEY) as fake:
        audio, events = await exchange(
            fake,
            [
                {"text": "This "},
                {"text": "is "},
                {"text": "a "},
                {"text": "test "},
                {"operation": "clear"},  # nothing was spoken yet: no punctuation, no flush
                {"text": "This "},
                {"text": "is "},
                {"text": "an "},
                {"text": "incomplete "},
                {"text": "sentence "},
                {"operation": "eos"},
            ],
        )
    spoken = "This is an incomplete sentence"
    assert len(audio) == 8 * 60 * len(spoken)
    stamps = [e for e in events if e["type"] == "timestamps"]
    assert stamps[0]["word_timestamps"]["words"] == spoken.split()
    assert events[-1] == {"type": "done", "contextId": None}


async def test_text_waits_for_punctuation_and_events_carry_the_context() -> None:
    async with FakeRimeServer(KEY) as fake:
        audio, events = await exchange(
            fake,
            [
                {"text": "Hello there. And", "contextId": "a"},
                {"text": " more", "contextId": "b"},
                {"operation": "eos"},
            ],
        )
    chunks = [e for e in events if e["type"] == "chunk"]
    contexts = [c["contextId"] for c in chunks]
    first = sum(1 for c in contexts if c == "a")
    assert contexts == ["a"] * first + ["b"] * (len(contexts) - first) and first > 0
    assert len(audio) == 8 * 60 * (len("Hello there.") + len("And more"))


async def test_clear_stops_speech_mid_sentence_and_no_done_follows() -> None:
    async with FakeRimeServer(KEY, speed=5) as fake:
        async with websockets.connect(
            f"{fake.base_url}/ws3?{QUERY}", additional_headers={"Authorization": f"Bearer {KEY}"}
        ) as ws:
            await ws.send(
                json.dumps({"text": "A long sentence that takes a while to say.", "contextId": "x"})
            )
            await ws.send(json.dumps({"operation": "flush"}))
            first = json.loads(await ws.recv())
            assert first["type"] == "chunk"
            await ws.send(json.dumps({"operation": "clear"}))
            await wait_until(lambda: fake.speaking() == 0, 5, "speech to stop")
            sent = fake.connections[0].chunks_sent
            await ws.send(json.dumps({"text": "Next.", "contextId": "y"}))
            await ws.send(json.dumps({"operation": "flush"}))
            later: list[dict[str, Any]] = []
            while not later or later[-1]["type"] != "done":
                later.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        assert fake.connections[0].done_sent == ["y"]
        assert all(e.get("contextId") in ("x", "y") for e in later)
        assert sent < len(b"A long sentence that takes a while to say.") * 60 // 100


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({"Authorization": KEY}, QUERY, 401),  # the key without Bearer
        ({"Authorization": "Bearer nope"}, QUERY, 401),
        ({"Authorization": f"Bearer {KEY}"}, "modelId=arcana&audioFormat=mulaw", 400),
    ],
)
async def test_refusals(headers: dict[str, str], query: str, status: int) -> None:
    async with FakeRimeServer(KEY) as fake:
        with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
            async with websockets.connect(f"{fake.base_url}/ws3?{query}", additional_headers=headers):
                pass
    assert caught.value.response.status_code == status


async def test_unreadable_messages_get_an_error_event() -> None:
    async with FakeRimeServer(KEY) as fake:
        async with websockets.connect(
            f"{fake.base_url}/ws3?{QUERY}", additional_headers={"Authorization": f"Bearer {KEY}"}
        ) as ws:
            await ws.send("not json")
            assert json.loads(await ws.recv())["type"] == "error"
            await ws.send(json.dumps({"operation": "rewind"}))
            assert json.loads(await ws.recv())["type"] == "error"
