"""Anthropic Messages API response side, sans-I/O: the typed events of a streamed reply and their SSE decoder.

Wire facts: see `patterd.protocols.anthropic` (the request side, which re-exports these names).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from patterd.protocols import jsontext
from patterd.protocols.sse import SSEDecoder, SSEEvent

# Error types (docs "Errors") after which the same request may succeed later.
RETRYABLE_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "rate_limit_error", "timeout_error"})
AUTH_ERROR_TYPES = frozenset({"authentication_error", "permission_error"})


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
