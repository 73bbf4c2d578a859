"""The Chat Completions codec: request bodies and the incremental SSE decoder."""

from __future__ import annotations

import json

import pytest

from patterd.protocols.openai_chat import (
    ChatMessage,
    ChatProtocolError,
    ChatStreamDecoder,
    ChatToolCall,
    ContentDelta,
    FunctionTool,
    StreamDone,
    StreamError,
    ToolCallDone,
    UsageReport,
    build_request,
    error_message,
)

# The streamed example of the API reference ("The chat completion chunk object"), plus the usage chunk.
DOC_STREAM = (
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini",'
    b'"system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini",'
    b'"system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini",'
    b'"system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"content":" there"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini",'
    b'"system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini",'
    b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4}}}\n\n'
    b"data: [DONE]\n\n"
)

EXPECTED = [
    ContentDelta("Hello"),
    ContentDelta(" there"),
    UsageReport(9, 2, 4),
    StreamDone("stop"),
]


def chunk(delta: dict[str, object] | None = None, finish: str | None = None, **extra: object) -> bytes:
    body: dict[str, object] = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    body.update(extra)
    return f"data: {json.dumps(body)}\n\n".encode()


def test_request_body_has_the_documented_shape() -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Where is order 42?"),
        ChatMessage("assistant", "", (ChatToolCall("call_1", "lookup", '{"id":"42"}'),)),
        ChatMessage("tool", '{"status":"shipped"}', tool_call_id="call_1"),
    ]
    tool = FunctionTool(
        "lookup", "Find an order.", {"type": "object", "properties": {"id": {"type": "string"}}}
    )
    body = build_request("gpt-4o-mini", messages, [tool], temperature=0.2, max_tokens=200)
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is order 42?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"id":"42"}'},
                    }
                ],
            },
            {"role": "tool", "content": '{"status":"shipped"}', "tool_call_id": "call_1"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Find an order.",
                    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
                },
            }
        ],
        "temperature": 0.2,
        "max_tokens": 200,
    }
    assert "tools" not in build_request("m", [ChatMessage("user", "hi")])


def test_tool_message_without_call_id_is_refused() -> None:
    with pytest.raises(ValueError, match="tool_call_id"):
        build_request("m", [ChatMessage("tool", "x")])


def test_empty_tool_parameters_become_an_empty_object_schema() -> None:
    body = build_request("m", [ChatMessage("user", "hi")], [FunctionTool("end_call", "Hang up.", {})])
    assert body["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


def test_documented_stream_decodes_whole_and_byte_by_byte() -> None:
    decoder = ChatStreamDecoder()
    assert decoder.feed(DOC_STREAM) + decoder.close() == EXPECTED
    assert decoder.done
    decoder = ChatStreamDecoder()
    events = []
    for i in range(len(DOC_STREAM)):
        events += decoder.feed(DOC_STREAM[i : i + 1])
    assert events + decoder.close() == EXPECTED


def test_crlf_comments_and_other_fields_are_handled() -> None:
    raw = DOC_STREAM.replace(b"\n", b"\r\n")
    raw = b": keep-alive\r\n\r\nevent: message\r\nid: 7\r\n" + raw
    decoder = ChatStreamDecoder()
    assert decoder.feed(raw) == EXPECTED


def test_tool_calls_assemble_from_pieces_across_chunks() -> None:
    stream = b"".join(
        [
            chunk({"role": "assistant", "content": None}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "lookup", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"order'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "end_call", "arguments": "{}"},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '_id": "42"}'}}]}),
            chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    decoder = ChatStreamDecoder()
    assert decoder.feed(stream) == [
        ToolCallDone("call_a", "lookup", {"order_id": "42"}),
        ToolCallDone("call_b", "end_call", {}),
        StreamDone("tool_calls"),
    ]


def test_compatible_servers_quirks() -> None:
    # Ollama-style: whole tool call in one piece, finish_reason "stop"; vLLM-style: usage with choices null.
    stream = (
        chunk({"tool_calls": [{"id": "x", "function": {"name": "f", "arguments": '{"a": 1}'}}]})
        + chunk({}, "stop")
        + b'data: {"id":"c","choices":null,"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    )
    decoder = ChatStreamDecoder()
    events = decoder.feed(stream)
    assert events == [ToolCallDone("x", "f", {"a": 1}), UsageReport(3, 1, 0)]
    assert decoder.close() == [] and not decoder.done and decoder.finish_reason == "stop"


def test_tool_calls_still_open_at_end_of_body_are_finished_by_close() -> None:
    decoder = ChatStreamDecoder()
    assert (
        decoder.feed(
            chunk({"tool_calls": [{"index": 0, "id": "y", "function": {"name": "g", "arguments": "{}"}}]})
        )
        == []
    )
    assert decoder.close() == [ToolCallDone("y", "g", {})]


def test_last_event_without_blank_line_is_dispatched_on_close() -> None:
    decoder = ChatStreamDecoder()
    assert decoder.feed(b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}') == []
    assert decoder.close() == [ContentDelta("hi")]


def test_multi_line_data_is_joined() -> None:
    decoder = ChatStreamDecoder()
    assert decoder.feed(b'data: {"choices":\ndata: [{"index":0,"delta":{"content":"x"}}]}\n\n') == [
        ContentDelta("x")
    ]


def test_error_object_in_the_stream() -> None:
    decoder = ChatStreamDecoder()
    raw = b'data: {"error":{"message":"The server had an error","type":"server_error","code":null}}\n\n'
    assert decoder.feed(raw) == [StreamError("The server had an error", "server_error", "")]


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(ChatProtocolError, match="not JSON"):
        ChatStreamDecoder().feed(b"data: {nope\n\n")
    bad_args = chunk(
        {"tool_calls": [{"index": 0, "id": "z", "function": {"name": "f", "arguments": "{oops"}}]}
    ) + chunk({}, "tool_calls")
    with pytest.raises(ChatProtocolError, match="not JSON"):
        ChatStreamDecoder().feed(bad_args)
    with pytest.raises(ChatProtocolError, match="JSON object"):
        ChatStreamDecoder().feed(
            chunk(
                {"tool_calls": [{"index": 0, "id": "z", "function": {"name": "f", "arguments": "[1]"}}]},
                "tool_calls",
            )
        )


def test_error_message_reads_openai_and_other_shapes() -> None:
    openai = b'{"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}}'
    assert error_message(openai, 401) == "HTTP 401: Incorrect API key provided."
    assert error_message(b'{"error": "model not found"}', 404) == "HTTP 404: model not found"
    assert error_message(b"Bad Gateway", 502) == "HTTP 502: Bad Gateway"
    assert error_message(b"", 503) == "HTTP 503: no body"
