"""The Anthropic Messages wire format: turn conversion, request body, and the SSE stream decoder."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.protocols import anthropic as wire
from patterd.protocols.anthropic import (
    AnthropicProtocolError,
    MessageDone,
    MessageStreamDecoder,
    Skipped,
    StreamError,
    TextPiece,
    Tool,
    ToolUse,
    ToolUseDone,
    Turn,
    Usage,
)
from tests.fakes.anthropic import Reply, events_for, validate


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def stream_bytes(reply: Reply) -> bytes:
    return b"".join(sse(kind, data) for kind, data in events_for(reply, "claude-haiku-4-5", 1))


def decode(data: bytes, step: int | None = None) -> list[wire.StreamEvent]:
    decoder = MessageStreamDecoder()
    out: list[wire.StreamEvent] = []
    step = step or len(data) or 1
    for i in range(0, len(data), step):
        out += decoder.feed(data[i : i + step])
    return out + decoder.close()


def test_system_turns_become_the_top_level_prompt_and_roles_alternate() -> None:
    call = ToolUse("toolu_1", "lookup", {"id": "42"})
    turns = [
        Turn("system", "You are a helpful assistant."),
        Turn("assistant", "Hello, how can I help?"),  # a first_message greeting opens the call
        Turn("user", "Where is order 42?"),
        Turn("user", "It is urgent."),
        Turn("assistant", "Let me look.", tool_calls=(call,)),
        Turn("tool", '{"status": "shipped"}', tool_call_id="toolu_1"),
        Turn("user", "Thanks"),
        Turn("assistant", ""),  # nothing was heard of a cut reply: dropped
    ]
    system, messages = wire.convert(turns)
    assert system == "You are a helpful assistant."
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0]["content"] == [{"type": "text", "text": wire.CALL_STARTED}]
    assert messages[2]["content"] == [
        {"type": "text", "text": "Where is order 42?"},
        {"type": "text", "text": "It is urgent."},
    ]
    assert messages[3]["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"id": "42"}},
    ]
    assert messages[4]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"status": "shipped"}'},
        {"type": "text", "text": "Thanks"},
    ]
    body = wire.build_request("claude-haiku-4-5", 300, turns, temperature=0.2)
    assert validate(body) is None  # what the fake (checking like the API) accepts


def test_tool_results_lead_their_user_message_and_tools_have_input_schema() -> None:
    a, b = ToolUse("toolu_a", "f", {}), ToolUse("toolu_b", "g", {"x": 1})
    turns = [
        Turn("user", "go"),
        Turn("assistant", "", tool_calls=(a, b)),
        Turn("tool", "", tool_call_id="toolu_a"),  # an empty tool result is allowed, an empty text is not
        Turn("tool", "done", tool_call_id="toolu_b"),
    ]
    tools = [
        Tool("f", "Does f.", {}),
        Tool("g", "", {"type": "object", "properties": {"x": {"type": "integer"}}}),
    ]
    body = wire.build_request("m", 100, turns, tools)
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}},
        {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {"x": 1}},
    ]
    assert [b["tool_use_id"] for b in body["messages"][2]["content"]] == ["toolu_a", "toolu_b"]
    assert body["tools"] == [
        {"name": "f", "input_schema": {"type": "object", "properties": {}}, "description": "Does f."},
        {"name": "g", "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    ]
    assert body["stream"] is True and body["max_tokens"] == 100 and "system" not in body
    assert validate(body) is None


def test_final_assistant_prefill_loses_trailing_whitespace_and_empty_conversations_are_refused() -> None:
    _, messages = wire.convert([Turn("user", "hi"), Turn("assistant", "Well, ")])
    assert messages[-1]["content"][-1]["text"] == "Well,"
    with pytest.raises(ValueError, match="no user or assistant"):
        wire.build_request("m", 10, [Turn("system", "only instructions")])
    with pytest.raises(ValueError, match="tool_call_id"):
        wire.convert([Turn("tool", "x")])


def test_headers() -> None:
    assert wire.headers("k") == {
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
        "x-api-key": "k",
    }
    assert "x-api-key" not in wire.headers(None)


@pytest.mark.parametrize("step", [None, 1, 7])
def test_decodes_text_tool_calls_and_usage_in_any_chunking(step: int | None) -> None:
    reply = Reply(
        text="Let me check that order.",
        tool_calls=[("lookup", {"id": "A-42", "note": "ünïcode ✓"}), ("end_call", {})],
        input_tokens=30,
        output_tokens=12,
        cache_read_input_tokens=100,
        cache_creation_input_tokens=5,
    )
    events = decode(stream_bytes(reply), step)
    texts = [e.text for e in events if isinstance(e, TextPiece)]
    assert "".join(texts) == "Let me check that order." and len(texts) == 5
    calls = [e for e in events if isinstance(e, ToolUseDone)]
    assert calls == [
        ToolUseDone("toolu_fake0001x0", "lookup", {"id": "A-42", "note": "ünïcode ✓"}),
        ToolUseDone("toolu_fake0001x1", "end_call", {}),
    ]
    (usage,) = [e for e in events if isinstance(e, Usage)]
    assert usage == Usage(30, 12, 100, 5) and usage.total_input_tokens == 135
    assert events[-1] == MessageDone("tool_use")


def test_error_event_after_200_and_ping_and_unknown_events() -> None:
    data = (
        sse(
            "message_start",
            {"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 1}}},
        )
        + b": keep-alive comment\n\n"
        + sse("ping", {"type": "ping"})
        + sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}},
        )
        + sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "hm"},
            },
        )
        + sse("brand_new_event", {"type": "brand_new_event", "x": 1})
        + sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    events = decode(data)
    assert events[0] == StreamError("overloaded_error", "Overloaded") and events[0].retryable
    assert events[1:] == [Usage(3, 1)]  # a cut stream still reports what was billed
    assert not StreamError("invalid_request_error", "bad").retryable


def test_malformed_events_are_skipped_not_fatal() -> None:
    data = (
        b"event: content_block_delta\ndata: {not json\n\n"
        + b"event: message_start\ndata: [1, 2]\n\n"
        + sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 9, "delta": {"type": "text_delta", "text": "x"}},
        )
        + sse("content_block_start", {"type": "content_block_start"})  # no index
        + stream_bytes(Reply(text="fine"))
    )
    events = decode(data)
    assert sum(isinstance(e, Skipped) for e in events) == 4
    assert [e.text for e in events if isinstance(e, TextPiece)] == ["fine"]


def test_tool_input_that_is_not_a_json_object_is_a_protocol_error() -> None:
    start = sse(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "f"},
        },
    )
    delta = sse(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"a": '},
        },
    )
    stop = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
    with pytest.raises(AnthropicProtocolError, match="not JSON"):
        decode(start + delta + stop)


def test_error_detail() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"r"}'
    assert wire.error_detail(body) == ("overloaded_error", "Overloaded")
    assert wire.error_detail(b"<html>bad gateway</html>") == ("", "<html>bad gateway</html>")
    assert wire.error_detail(b"") == ("", "no body")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_random_bytes_never_escape_as_anything_but_a_protocol_error(chunks: list[bytes]) -> None:
    decoder = MessageStreamDecoder()
    try:
        for chunk in chunks:
            decoder.feed(chunk)
        decoder.close()
    except AnthropicProtocolError:
        pass


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "type": st.sampled_from(
                    [
                        "message_start",
                        "content_block_start",
                        "content_block_delta",
                        "content_block_stop",
                        "message_delta",
                        "message_stop",
                        "error",
                    ]
                )
            },
            optional={
                "index": st.one_of(st.integers(-2, 3), st.text(max_size=3), st.none()),
                "delta": st.one_of(
                    st.none(),
                    st.dictionaries(
                        st.sampled_from(["type", "text", "partial_json", "stop_reason"]),
                        st.one_of(st.text(max_size=8), st.integers()),
                    ),
                ),
                "content_block": st.one_of(
                    st.none(),
                    st.dictionaries(
                        st.sampled_from(["type", "id", "name"]),
                        st.one_of(st.sampled_from(["text", "tool_use"]), st.integers()),
                    ),
                ),
                "message": st.one_of(
                    st.none(),
                    st.integers(),
                    st.dictionaries(
                        st.just("usage"),
                        st.dictionaries(
                            st.sampled_from(["input_tokens", "output_tokens"]),
                            st.one_of(st.integers(), st.text(max_size=3)),
                        ),
                    ),
                ),
                "error": st.one_of(
                    st.none(),
                    st.text(max_size=5),
                    st.dictionaries(st.sampled_from(["type", "message"]), st.text(max_size=5)),
                ),
            },
        ),
        max_size=12,
    )
)
def test_wrongly_shaped_events_are_skipped_or_refused_never_crash(events: list[dict[str, Any]]) -> None:
    data = b"".join(sse(str(e["type"]), e) for e in events)
    # AnthropicProtocolError: a tool_use block with unusable input (the provider makes it a ProviderProtocolError).
    with contextlib.suppress(AnthropicProtocolError):
        decode(data)
