"""Anthropic Messages API streaming, sans-I/O: the request (OpenAI-style turns converted), and a typed SSE event decoder.

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
from dataclasses import dataclass, field
from typing import Any, Literal

from patterd.protocols import jsontext
from patterd.protocols.sse import SSEDecoder, SSEEvent

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
# Sent as the first user turn when a conversation opens with the agent speaking (a first_message
# greeting): the API refuses a first message that is not `user`.
CALL_STARTED = "(The call has connected.)"

# Error types (docs "Errors") after which the same request may succeed later.
RETRYABLE_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
AUTH_ERROR_TYPES = frozenset({"authentication_error", "permission_error"})


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


# ---------------------------------------------------------------- response side


@dataclass(frozen=True)
class TextPiece:
    """A piece of the reply text."""

    text: str


@dataclass(frozen=True)
class ToolUseDone:
    """A complete tool_use block: its input parsed from the joined `partial_json` fragments."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Usage:
    """Token counts of the message (`input_tokens` excludes the cache_* ones, as the API reports it)."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


@dataclass(frozen=True)
class StreamError:
    """An `error` event: the server failed after the stream started."""

    type: str
    message: str

    @property
    def retryable(self) -> bool:
        return self.type in RETRYABLE_ERROR_TYPES


@dataclass(frozen=True)
class MessageDone:
    """`message_stop`: the reply is complete."""

    stop_reason: str | None


@dataclass(frozen=True)
class Skipped:
    """An event that could not be read and was skipped (the caller logs and counts it)."""

    reason: str


StreamEvent = TextPiece | ToolUseDone | Usage | StreamError | MessageDone | Skipped


class AnthropicProtocolError(ValueError):
    """The stream cannot go on: a tool call whose input is not a JSON object, or a stream that is not SSE."""


@dataclass
class _Block:
    type: str
    id: str = ""
    name: str = ""
    json: list[str] = field(default_factory=list)


def _index(data: dict[str, Any]) -> int:
    index = data["index"]
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"index is {index!r}, not an integer")
    return index


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class MessageStreamDecoder:
    """Incremental decoder: feed response bytes, get events; `close()` at the end of the body."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._blocks: dict[int, _Block] = {}
        self._usage: dict[str, int] = {}
        self._usage_sent = False
        self.started = False  # message_start seen
        self.done = False  # message_stop seen
        self.stop_reason: str | None = None

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Events completed by `data`."""
        try:
            raw = self._sse.feed(data)
        except ValueError as exc:
            raise AnthropicProtocolError(str(exc)) from exc
        return [e for sse in raw for e in self._event(sse)]

    def close(self) -> list[StreamEvent]:
        """The body ended: a last event, then the usage counted so far if message_stop never came."""
        try:
            raw = self._sse.close()
        except ValueError as exc:
            raise AnthropicProtocolError(str(exc)) from exc
        events = [e for sse in raw for e in self._event(sse)]
        if not self.done:
            events.extend(self._usage_event())  # tokens billed for a cut stream still cost money
        return events

    def _event(self, sse: SSEEvent) -> list[StreamEvent]:
        try:
            data = jsontext.loads(sse.data)
        except ValueError as exc:
            return [Skipped(f"{sse.event or 'event'} data is not JSON ({exc}): {sse.data[:120]!r}")]
        if not isinstance(data, dict):
            return [Skipped(f"{sse.event or 'event'} data is not an object: {sse.data[:120]!r}")]
        kind = data.get("type") if isinstance(data.get("type"), str) else sse.event
        try:
            return self._typed(str(kind), data)
        except (KeyError, TypeError, AttributeError) as exc:
            return [
                Skipped(f"{kind} event has an unexpected shape ({type(exc).__name__}): {sse.data[:120]!r}")
            ]

    def _typed(self, kind: str, data: dict[str, Any]) -> list[StreamEvent]:
        if kind == "ping":
            return []
        if kind == "error":
            err = data.get("error") or {}
            if not isinstance(err, dict):
                return [StreamError("", str(err))]
            return [StreamError(str(err.get("type") or ""), str(err.get("message") or "stream error"))]
        if kind == "message_start":
            self.started = True
            self._add_usage(data["message"].get("usage"))
            return []
        if kind == "content_block_start":
            block = data["content_block"]
            self._blocks[_index(data)] = _Block(
                str(block["type"]), str(block.get("id") or ""), str(block.get("name") or "")
            )
            return []
        if kind == "content_block_delta":
            return self._delta(_index(data), data["delta"])
        if kind == "content_block_stop":
            return self._stop(_index(data))
        if kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop_reason = str(delta["stop_reason"])
            self._add_usage(data.get("usage"))
            return []
        if kind == "message_stop":
            self.done = True
            return [*self._finish_open_blocks(), *self._usage_event(), MessageDone(self.stop_reason)]
        return []  # a newer event type: skip, as the docs ask

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        block = self._blocks.get(index)
        if block is None:
            return [Skipped(f"content_block_delta for block {index}, which never started")]
        kind = delta["type"]
        if kind == "text_delta" and block.type == "text":
            text = str(delta["text"])
            return [TextPiece(text)] if text else []
        if kind == "input_json_delta" and block.type == "tool_use":
            block.json.append(str(delta["partial_json"]))
        return []  # thinking, citations, signatures: nothing a voice reply uses

    def _stop(self, index: int) -> list[StreamEvent]:
        block = self._blocks.pop(index, None)
        if block is None or block.type != "tool_use":
            return []
        text = "".join(block.json).strip() or "{}"
        try:
            arguments = jsontext.loads(text)
        except ValueError as exc:
            raise AnthropicProtocolError(
                f"tool_use {block.name!r} (id {block.id!r}) has input that is not JSON: {text[:200]!r}"
            ) from exc
        if not isinstance(arguments, dict):
            raise AnthropicProtocolError(
                f"tool_use {block.name!r} input must be a JSON object, got {text[:200]!r}"
            )
        if not block.name or not block.id:
            raise AnthropicProtocolError(f"tool_use block {index} has no id or name")
        return [ToolUseDone(block.id, block.name, arguments)]

    def _finish_open_blocks(self) -> list[StreamEvent]:
        # message_stop closes every block even if a content_block_stop was lost.
        events: list[StreamEvent] = []
        for index in sorted(self._blocks):
            events.extend(self._stop(index))
        return events

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_delta counts are cumulative: the latest value of each field wins.
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ):
            if usage.get(key) is not None:
                self._usage[key] = _int(usage[key])

    def _usage_event(self) -> list[StreamEvent]:
        if self._usage_sent or not self._usage:
            return []
        self._usage_sent = True
        u = self._usage
        return [
            Usage(
                u.get("input_tokens", 0),
                u.get("output_tokens", 0),
                u.get("cache_read_input_tokens", 0),
                u.get("cache_creation_input_tokens", 0),
            )
        ]


def dumps(body: Mapping[str, Any]) -> bytes:
    """A request body as compact UTF-8 JSON; lone surrogates (from a transcript or a tool) made encodable."""
    return jsontext.clean_text(json.dumps(body, separators=(",", ":"), ensure_ascii=False)).encode("utf-8")
