"""Anthropic Messages API, sans-I/O: the request (OpenAI-style turns converted); the SSE decoder is anthropic_stream.

Wire facts followed (docs.claude.com "Messages" API reference, "Streaming Messages", "Tool use:
handling tool calls", "Errors"; anthropic-sdk-python 2.14.0 `_streaming.py` and
`lib/streaming/_messages.py` for how a client reads the stream):

- Request: `POST {base}/v1/messages`, headers `x-api-key`, `anthropic-version: 2023-06-01`,
  `content-type: application/json`; body `{model, max_tokens (required), system?, messages,
  tools?, temperature? (0..1), stream: true}`. `system` is a top-level string, never a message.
- Messages are `user` / `assistant` only and the first one must be `user`; content is a list of
  blocks: `text` (non-empty), `tool_use {id, name, input}` (assistant), `tool_result
  {tool_use_id, content}` (user, placed first, in the message right after the tool_use).
  Tools are `{name, description, input_schema}` with an object schema.
- Stream: SSE with `event:` names; `message_start {message.usage}`, then per content block
  `content_block_start {index, content_block: text | tool_use {id, name}}`,
  `content_block_delta {index, delta: text_delta.text | input_json_delta.partial_json}`,
  `content_block_stop {index}`; then `message_delta {delta.stop_reason, usage (cumulative)}` and
  `message_stop`. `ping` may come anywhere; `error {error: {type, message}}` may come after
  HTTP 200 (e.g. `overloaded_error`). Unknown events and block types are skipped (the API adds
  new ones, e.g. thinking blocks).
- Usage: `input_tokens` excludes `cache_read_input_tokens` and `cache_creation_input_tokens`;
  the input total is their sum.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from patterd.protocols import jsontext

# The response side lives in its own module; these names stay importable from here.
from patterd.protocols.anthropic_stream import (
    AUTH_ERROR_TYPES,
    RETRYABLE_ERROR_TYPES,
    AnthropicProtocolError,
    MessageDone,
    MessageStreamDecoder,
    Skipped,
    StreamError,
    StreamEvent,
    TextPiece,
    ToolUseDone,
    Usage,
)

__all__ = [
    "API_VERSION",
    "AUTH_ERROR_TYPES",
    "CALL_STARTED",
    "DEFAULT_BASE_URL",
    "MESSAGES_PATH",
    "MODELS_PATH",
    "RETRYABLE_ERROR_TYPES",
    "AnthropicProtocolError",
    "MessageDone",
    "MessageStreamDecoder",
    "Skipped",
    "StreamError",
    "StreamEvent",
    "TextPiece",
    "Tool",
    "ToolUse",
    "ToolUseDone",
    "Turn",
    "Usage",
    "build_request",
    "convert",
    "dumps",
    "error_detail",
    "headers",
    "tool_json",
]

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
# Sent as the first user turn when a conversation opens with the agent speaking (a first_message
# greeting): the API refuses a first message that is not `user`.
CALL_STARTED = "(The call has connected.)"


def headers(api_key: str | None) -> dict[str, str]:
    """The headers of every request; `x-api-key` only when there is a key (local compatible servers)."""
    out = {"anthropic-version": API_VERSION, "content-type": "application/json"}
    if api_key:
        out["x-api-key"] = api_key
    return out


# ---------------------------------------------------------------- request side


@dataclass(frozen=True)
class ToolUse:
    """A tool call the assistant made (from an earlier reply); `input` is the parsed arguments."""

    id: str
    name: str
    input: Mapping[str, Any]


@dataclass(frozen=True)
class Turn:
    """One OpenAI-style conversation message, before conversion to the Messages API shape."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: Sequence[ToolUse] = ()
    tool_call_id: str | None = None  # role "tool": the ToolUse.id this result answers


@dataclass(frozen=True)
class Tool:
    """A function the model may call."""

    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON Schema of the arguments


def _blocks(turn: Turn) -> tuple[str, list[dict[str, Any]]]:
    """The API role and content blocks of one non-system turn."""
    if turn.role == "tool":
        if not turn.tool_call_id:
            raise ValueError("a tool message needs tool_call_id; got none")
        # A tool_result's content may be empty (the tool said nothing); a text block may not.
        return "user", [{"type": "tool_result", "tool_use_id": turn.tool_call_id, "content": turn.content}]
    blocks: list[dict[str, Any]] = []
    if turn.content.strip():
        blocks.append({"type": "text", "text": turn.content})
    if turn.role == "assistant":
        blocks.extend(
            {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.input)} for c in turn.tool_calls
        )
    return turn.role, blocks


def convert(turns: Sequence[Turn]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, messages): system turns joined into the top-level prompt, the rest as alternating messages.

    Consecutive turns of one role become one message (tool results and the next user text share
    a user message, results first); empty turns are dropped; a conversation that opens with the
    assistant gets a CALL_STARTED user turn before it.
    """
    system = "\n\n".join(t.content.strip() for t in turns if t.role == "system" and t.content.strip())
    messages: list[dict[str, Any]] = []
    for turn in turns:
        if turn.role == "system":
            continue
        role, blocks = _blocks(turn)
        if not blocks:
            continue
        if not messages and role == "assistant":
            messages.append({"role": "user", "content": [{"type": "text", "text": CALL_STARTED}]})
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    for message in messages:
        # tool_result blocks must lead their user message; a stable sort keeps the rest in order.
        if message["role"] == "user":
            message["content"].sort(key=lambda b: b["type"] != "tool_result")
    if messages and messages[-1]["role"] == "assistant":
        # A final assistant message is a prefill, which the API refuses with trailing whitespace.
        last = messages[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()
    return system, messages


def tool_json(tool: Tool) -> dict[str, Any]:
    """One tool in the wire shape."""
    schema = dict(tool.parameters) or {"type": "object", "properties": {}}
    out: dict[str, Any] = {"name": tool.name, "input_schema": schema}
    if tool.description:
        out["description"] = tool.description
    return out


def build_request(
    model: str,
    max_tokens: int,
    turns: Sequence[Turn],
    tools: Sequence[Tool] = (),
    *,
    temperature: float | None = None,
) -> dict[str, Any]:
    """The JSON body of a streaming `POST /v1/messages`."""
    system, messages = convert(turns)
    if not messages:
        raise ValueError("the conversation has no user or assistant message to send")
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages, "stream": True}
    if system:
        body["system"] = system
    if tools:
        body["tools"] = [tool_json(t) for t in tools]
    if temperature is not None:
        body["temperature"] = temperature
    return body


def error_detail(body: bytes) -> tuple[str, str]:
    """(error type, message) of an error response `{"type": "error", "error": {type, message}}`, else ("", text)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = jsontext.loads(text)
    except ValueError:
        return "", jsontext.clean_text(text[:300]) or "no body"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("type") or ""), str(err.get("message") or text[:300])
    return "", text[:300]


def dumps(body: Mapping[str, Any]) -> bytes:
    """A request body as compact UTF-8 JSON; lone surrogates (from a transcript or a tool) made encodable."""
    return jsontext.clean_text(json.dumps(body, separators=(",", ":"), ensure_ascii=False)).encode("utf-8")
