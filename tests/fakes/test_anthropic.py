"""The fake Anthropic server is faithful: the official `anthropic` SDK streams text and tool calls from it, and it refuses what the API refuses."""

from __future__ import annotations

from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic.types import ToolParam

from tests.fakes.anthropic import FakeAnthropicServer, Reply, json_fragments, validate

KEY = "sk-ant-test"
TOOL: ToolParam = {
    "name": "lookup_order",
    "description": "Find an order by its number.",
    "input_schema": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
}


def client(server: FakeAnthropicServer, key: str = KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=key, base_url=server.base_url, max_retries=0)


async def test_sdk_streams_text_and_usage() -> None:
    async with FakeAnthropicServer(
        [Reply(text="We open at nine.", input_tokens=40, output_tokens=6)]
    ) as server:
        sdk = client(server)
        async with sdk.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=256,
            system="You are a helpful assistant.",
            messages=[{"role": "user", "content": "When are you open?"}],
        ) as stream:
            pieces = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        await sdk.close()
    assert len(pieces) == 4 and "".join(pieces) == "We open at nine."
    assert (
        final.stop_reason == "end_turn" and final.usage.input_tokens == 40 and final.usage.output_tokens == 6
    )
    sent = server.requests[0]
    # anthropic-sdk-python 2.14 sends the key as a Bearer token and its own newer API version.
    assert (
        sent.headers["Authorization"] == f"Bearer {KEY}" and sent.headers["anthropic-version"] == "2026-10-21"
    )
    assert sent.body["system"] == "You are a helpful assistant." and sent.body["stream"] is True


async def test_sdk_tool_call_round_trip() -> None:
    arguments = {"order": "A-42", "note": "caller is in a hurry"}
    replies = [
        Reply(text="Let me check.", tool_calls=[("lookup_order", arguments)]),
        Reply(text="It shipped."),
    ]
    async with FakeAnthropicServer(replies) as server:
        sdk = client(server)
        history: list[Any] = [{"role": "user", "content": "Where is order A-42?"}]
        async with sdk.messages.stream(
            model="claude-haiku-4-5", max_tokens=256, messages=history, tools=[TOOL]
        ) as stream:
            partials = [e.partial_json async for e in stream if e.type == "input_json"]
            final = await stream.get_final_message()
        (use,) = [b for b in final.content if b.type == "tool_use"]
        assert final.stop_reason == "tool_use" and use.name == "lookup_order" and use.input == arguments
        assert len([p for p in partials if p]) > 3  # the input really came in fragments
        history += [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "shipped"}],
            },
        ]
        async with sdk.messages.stream(
            model="claude-haiku-4-5", max_tokens=256, messages=history, tools=[TOOL]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        await sdk.close()
    assert text == "It shipped." and not server.refused


def test_json_fragments_cut_mid_token() -> None:
    text = '{"order": "A-42", "count": 12345}'
    parts = json_fragments(text)
    assert "".join(parts) == text and any(p.count('"') % 2 == 1 for p in parts)


async def test_sdk_errors_match_the_api() -> None:
    async with FakeAnthropicServer([Reply(text="a b c d", stream_error="overloaded_error")]) as server:
        bad = client(server, "sk-ant-wrong")
        with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
            await bad.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        await bad.close()
        sdk = client(server)
        for status, error in [(529, anthropic.OverloadedError), (429, anthropic.RateLimitError)]:
            server.fail_next(status)
            with pytest.raises(error):
                await sdk.models.list()
        with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
            async with sdk.messages.stream(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                async for _ in stream.text_stream:
                    pass
        models = await sdk.models.list()
        assert [m.id for m in models.data] == ["claude-haiku-4-5", "claude-sonnet-4-6"]
        with pytest.raises(anthropic.BadRequestError, match="first message must use the"):
            await sdk.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "assistant", "content": "Hello!"}]
            )
        await sdk.close()


async def test_missing_version_header_is_refused() -> None:
    async with FakeAnthropicServer() as server, aiohttp.ClientSession() as http:
        body = {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        async with http.post(
            f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": KEY}
        ) as response:
            assert response.status == 400
            error = await response.json()
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert "anthropic-version" in error["error"]["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens: Field required"),
        (
            {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
            "top-level `system`",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
            },
            "roles must alternate",
        ),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": ""}]}, "non-empty content"),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": "order?"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
                    },
                    {"role": "user", "content": "well?"},
                ],
            },
            "without `tool_result` blocks immediately after: toolu_1",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}],
                    }
                ],
            },
            "unexpected `tool_use_id`",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "f", "parameters": {"type": "object"}}],
            },
            "input_schema",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "temperature": 1.5,
                "messages": [{"role": "user", "content": "hi"}],
            },
            "0..1",
        ),
    ],
)
def test_validation_refuses_what_the_api_refuses(body: dict[str, Any], message: str) -> None:
    problem = validate(body)
    assert problem is not None and message in problem, problem
