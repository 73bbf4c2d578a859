"""The fake Chat Completions server speaks the wire protocol as documented (checked with a raw HTTP client)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.fakes.openai_chat import FakeChatServer, Reply

AUTH = {"Authorization": "Bearer sk-test"}


def body(**extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out.update(extra)
    return out


async def post(server: FakeChatServer, payload: Any, headers: dict[str, str] = AUTH) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.base_url}/chat/completions", json=payload, headers=headers) as r,
    ):
        return r.status, await r.read()


def sse_data(raw: bytes) -> list[str]:
    events = raw.decode().split("\n\n")
    return [e.removeprefix("data: ") for e in events if e.startswith("data: ")]


async def test_text_reply_is_sse_chunks_then_usage_then_done() -> None:
    async with FakeChatServer([Reply(text="Hello there friend.")]) as server:
        status, raw = await post(server, body())
    assert status == 200
    data = sse_data(raw)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello there friend."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 18
    assert raw.startswith(b": keep-alive\n\n")


async def test_tool_calls_are_split_into_pieces() -> None:
    async with FakeChatServer([Reply(tool_calls=[("lookup", {"order_id": "42"})])]) as server:
        _, raw = await post(server, body(stream_options=None) | {"stream_options": {"include_usage": False}})
    chunks = [json.loads(d) for d in sse_data(raw)[:-1]]
    pieces = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert pieces[0]["id"].startswith("call_") and pieces[0]["function"] == {
        "name": "lookup",
        "arguments": "",
    }
    assert json.loads("".join(p["function"]["arguments"] for p in pieces)) == {"order_id": "42"}
    assert all(p["index"] == 0 for p in pieces) and len(pieces) == 3
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "usage" not in chunks[-1]


async def test_requests_are_validated_like_the_api() -> None:
    async with FakeChatServer([Reply(text="x")]) as server:
        status, raw = await post(server, body(), headers={})
        assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
        orphan = body(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "tool", "content": "r", "tool_call_id": "c1"},
            ]
        )
        status, raw = await post(server, orphan)
        assert status == 400 and "preceeding message with 'tool_calls'" in json.loads(raw)["error"]["message"]
        no_id = body(messages=[{"role": "tool", "content": "r"}])
        status, raw = await post(server, no_id)
        assert status == 400 and "tool_call_id" in json.loads(raw)["error"]["message"]
        unanswered = body(
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "user", "content": "and?"},
            ]
        )
        status, raw = await post(server, unanswered)
        assert status == 400 and "c9" in json.loads(raw)["error"]["message"]
        status, raw = await post(
            server,
            body(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]),
        )
        assert status == 400 and 'type: \\"object\\"' in raw.decode()
        status, raw = await post(server, body(stream=False))
        assert status == 400 and "stream_options" in json.loads(raw)["error"]["message"]
        status, _ = await post(server, body(messages=[{"role": "robot", "content": "x"}]))
        assert status == 400
        assert server.requests == []  # refused requests do not consume the script
        status, _ = await post(server, body())
        assert status == 200


async def test_failures_and_models() -> None:
    async with FakeChatServer([Reply(status=429), Reply(text="a b c d", disconnect_after=2)]) as server:
        status, raw = await post(server, body())
        assert status == 429 and json.loads(raw)["error"]["type"] == "rate_limit_exceeded"
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.base_url}/chat/completions", json=body(), headers=AUTH) as r,
        ):
            try:
                await r.read()
                cut = False
            except aiohttp.ClientPayloadError:
                cut = True
        assert cut and server.requests[-1].aborted
        async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/models", headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["data"][0]["id"] == "gpt-4o-mini"
