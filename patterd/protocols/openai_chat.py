"""OpenAI Chat Completions streaming, sans-I/O: the request body, and an SSE decoder that yields typed events.

Wire facts followed (platform.openai.com API reference "Create chat completion" and "The chat
completion chunk object"; openai-python `_streaming.py` for how the stream ends and carries errors):

- Request: `{model, messages, tools?, stream: true, stream_options: {include_usage: true},
  temperature?, max_tokens?}`; an assistant message that called tools carries
  `tool_calls: [{id, type: "function", function: {name, arguments: "<JSON text>"}}]`; each
  result is a `{role: "tool", tool_call_id, content}` message; tools are
  `{type: "function", function: {name, description, parameters}}`.
- Response: Server-Sent Events, one `data: {chat.completion.chunk}` per event, `data: [DONE]`
  last; `choices[0].delta` has `role`, `content` pieces and `tool_calls[i]` pieces (`index`
  always, `id`/`function.name` on the first piece, `function.arguments` fragments after);
  `finish_reason` ("stop", "length", "tool_calls", ...) closes the choice; with include_usage a
  last chunk has `choices: []` (some compatible servers send `null`) and `usage`.
- A failure after the stream started arrives as `data: {"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

# ---------------------------------------------------------------- request side


@dataclass(frozen=True)
class ChatToolCall:
    """A tool call as it appears in an assistant message; `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: Sequence[ChatToolCall] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class FunctionTool:
    """A function the model may call."""

    name: str
    description: str
    parameters: Mapping[str, Any]


def message_json(message: ChatMessage) -> dict[str, Any]:
    """One message in the wire shape."""
    out: dict[str, Any] = {"role": message.role}
    if message.role == "assistant" and message.tool_calls:
        # content may be null beside tool_calls; send it only when the model also spoke.
        out["content"] = message.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    else:
        out["content"] = message.content
    if message.role == "tool":
        if not message.tool_call_id:
            raise ValueError("a tool message needs tool_call_id; got none")
        out["tool_call_id"] = message.tool_call_id
    return out


def tool_json(tool: FunctionTool) -> dict[str, Any]:
    """One tool in the wire shape."""
    parameters = dict(tool.parameters) or {"type": "object", "properties": {}}
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": parameters},
    }


def build_request(
    model: str,
    messages: Sequence[ChatMessage],
    tools: Sequence[FunctionTool] = (),
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The JSON body of a streaming `POST /chat/completions`."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [message_json(m) for m in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body["tools"] = [tool_json(t) for t in tools]
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def error_message(body: bytes, status: int) -> str:
    """The human message of an error response (`{"error": {"message": ...}}`), else the raw text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return f"HTTP {status}: {text[:300] or 'no body'}"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and err.get("message"):
        return f"HTTP {status}: {err['message']}"
    if isinstance(err, str):  # some compatible servers (Ollama) send {"error": "text"}
        return f"HTTP {status}: {err}"
    return f"HTTP {status}: {text[:300]}"


# ---------------------------------------------------------------- response side


@dataclass(frozen=True)
class ContentDelta:
    """A piece of the reply text."""

    text: str


@dataclass(frozen=True)
class ToolCallDone:
    """A complete tool call; `arguments` parsed from the assembled JSON text."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class UsageReport:
    """Token counts of the completion."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class StreamError:
    """The server reported an error inside the stream."""

    message: str
    type: str = ""
    code: str = ""


@dataclass(frozen=True)
class StreamDone:
    """`data: [DONE]`: the stream is complete."""

    finish_reason: str | None


ChatEvent = ContentDelta | ToolCallDone | UsageReport | StreamError | StreamDone


class ChatProtocolError(ValueError):
    """The stream held something that is not a Chat Completions chunk."""


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStreamDecoder:
    """Incremental decoder: feed raw response bytes, get events; call `close()` at end of body."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None
        self.done = False

    def feed(self, data: bytes) -> list[ChatEvent]:
        """Decode what `data` completes; a partial line waits for the next feed."""
        self._buffer += data
        events: list[ChatEvent] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                break
            raw, self._buffer = self._buffer[:cut], self._buffer[cut + 1 :]
            events.extend(self._line(raw.rstrip(b"\r").decode("utf-8")))
        return events

    def close(self) -> list[ChatEvent]:
        """The body ended: dispatch a last unterminated event and any tool calls still open."""
        events: list[ChatEvent] = []
        if self._buffer:
            events.extend(self._line(self._buffer.rstrip(b"\r").decode("utf-8")))
            self._buffer = b""
        events.extend(self._dispatch())
        events.extend(self._finish_calls())
        return events

    # One SSE line (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
    def _line(self, line: str) -> list[ChatEvent]:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # comment: keep-alive
            return []
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        return []  # event:, id:, retry: carry nothing we use

    def _dispatch(self) -> list[ChatEvent]:
        if not self._data:
            return []
        payload = "\n".join(self._data)
        self._data = []
        if payload.strip() == "[DONE]":
            self.done = True
            return [*self._finish_calls(), StreamDone(self.finish_reason)]
        try:
            chunk = json.loads(payload)
        except ValueError as exc:
            raise ChatProtocolError(f"chat stream event is not JSON: {payload[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise ChatProtocolError(f"chat stream event is not an object: {payload[:200]!r}")
        return self._chunk(chunk)

    def _chunk(self, chunk: dict[str, Any]) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        error = chunk.get("error")
        if error:
            if isinstance(error, dict):
                events.append(
                    StreamError(
                        str(error.get("message") or error),
                        str(error.get("type") or ""),
                        str(error.get("code") or ""),
                    )
                )
            else:
                events.append(StreamError(str(error)))
            return events
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # we ask for one choice (n=1)
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                events.append(ContentDelta(str(content)))
            for position, piece in enumerate(delta.get("tool_calls") or ()):
                self._tool_piece(position, piece)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
                # Close tool calls at any finish reason: some compatible servers say "stop".
                events.extend(self._finish_calls())
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            events.append(
                UsageReport(
                    int(usage.get("prompt_tokens") or 0),
                    int(usage.get("completion_tokens") or 0),
                    int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
                )
            )
        return events

    def _tool_piece(self, position: int, piece: Any) -> None:
        if not isinstance(piece, dict):
            raise ChatProtocolError(f"delta.tool_calls[{position}] is not an object: {piece!r}")
        index = piece.get("index", position)
        partial = self._calls.setdefault(int(index), _PartialCall())
        if piece.get("id"):
            partial.id = str(piece["id"])
        function = piece.get("function") or {}
        if function.get("name"):
            partial.name += str(function["name"])
        if function.get("arguments"):
            partial.arguments.append(str(function["arguments"]))

    def _finish_calls(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            text = "".join(partial.arguments).strip() or "{}"
            try:
                arguments = json.loads(text)
            except ValueError as exc:
                raise ChatProtocolError(
                    f"tool call {partial.name!r} (id {partial.id!r}) has arguments that are not JSON: {text[:200]!r}"
                ) from exc
            if not isinstance(arguments, dict):
                raise ChatProtocolError(
                    f"tool call {partial.name!r} arguments must be a JSON object, got {text[:200]!r}"
                )
            if not partial.name:
                raise ChatProtocolError(f"tool call at index {index} has no function name")
            events.append(ToolCallDone(partial.id or f"call_{index}", partial.name, arguments))
        self._calls.clear()
        return events
