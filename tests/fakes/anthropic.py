"""A fake Anthropic Messages API on 127.0.0.1: checks requests the way the API does, streams real SSE events.

Scripted with data: each `POST /v1/messages` takes the next `Reply` (text, tool calls, or a
fault). Checked like the API (docs.claude.com "Messages", "Errors", "Tool use"): `x-api-key`
(or a Bearer token; else 401 authentication_error), `anthropic-version` (400), JSON body with `model`, `max_tokens`,
non-empty `messages` of `user`/`assistant` roles that alternate and open with `user`, non-empty
text blocks, every `tool_use` answered by a `tool_result` at the start of the next user message
and no `tool_result` without its `tool_use`, tools with an object `input_schema`, temperature in
0..1. Violations get the status and `{"type": "error", "error": {type, message}}` body the API sends.

The stream follows the API's event order: `message_start`, a `ping`, per block
`content_block_start` / `content_block_delta` (`text_delta` word pieces, `input_json_delta`
fragments cut every few characters, mid-token) / `content_block_stop`, `message_delta`
(stop_reason, cumulative usage), `message_stop`, each framed as `event: <type>` + `data: <json>`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from tests.fakes.speech_timeline import LoopbackServer

# Versions the fake knows: the stable one clients pin, and the one anthropic-sdk-python 2.14 sends.
API_VERSIONS = frozenset({"2023-06-01", "2026-10-21"})
DEFAULT_MODELS = ("claude-haiku-4-5", "claude-sonnet-4-6")

# The error type the API sends with each status (docs "Errors").
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
MESSAGES = {
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    503: "Service unavailable",
    529: "Overloaded",
}


@dataclass
class Reply:
    """What the server answers to one request."""

    text: str = ""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()  # (name, input)
    status: int = 200  # != 200: this status and the API's error body, no stream
    retry_after: str | None = None  # a `retry-after` header on an error status
    stream_error: str | None = None  # an `error` event of this type after the first text delta
    disconnect_after: int | None = None  # cut the connection after this many events
    delay_secs: float = 0.0  # before the response starts
    event_delay_secs: float = 0.0  # between events
    input_tokens: int = 25
    output_tokens: int = 9
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    stop_reason: str | None = None  # default: tool_use with tool calls, else end_turn
    raw_events: Sequence[str] = ()  # extra raw SSE text sent right after message_start (abuse cases)


@dataclass
class Received:
    """One request as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    events_sent: int = 0
    completed: bool = False  # the whole stream was written
    aborted: bool = False  # the client went away (or we cut it) mid-stream
    ended: asyncio.Event = field(default_factory=asyncio.Event)


def error_response(
    status: int, message: str | None = None, *, retry_after: str | None = None
) -> web.Response:
    """The API's answer with `status`."""
    kind = ERROR_TYPES.get(status, "api_error")
    body = {
        "type": "error",
        "error": {"type": kind, "message": message or MESSAGES.get(status, f"HTTP {status}")},
        "request_id": "req_fake0001",
    }
    headers = {"request-id": "req_fake0001"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return web.json_response(body, status=status, headers=headers)


def _blocks(content: Any, where: str) -> list[dict[str, Any]] | str:
    """The message's content blocks, or what is wrong with them."""
    if isinstance(content, str):
        if not content:
            return f"{where}: all messages must have non-empty content except for the optional final assistant message"
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        return f"{where}.content: Input should be a valid list"
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"{where}.content.{j}: Input should be a valid dictionary or object"
        if block["type"] == "text" and (not isinstance(block.get("text"), str) or not block["text"]):
            return f"{where}.content.{j}.text: text content blocks must be non-empty"
    return content


def validate(body: Any) -> str | None:
    """What the API would answer with 400 for this body, or None."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary or object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Field required"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 1):
        return "temperature: range: 0..1"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return (
            "messages: Field required" if messages is None else "messages: at least one message is required"
        )
    pending: set[str] = set()  # tool_use ids of the previous assistant message
    previous = ""
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            return f"{where}: Input should be a valid dictionary or object"
        role = message.get("role")
        if role == "system":
            return (
                f'{where}: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
                'not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            return f"{where}.role: Input should be 'user' or 'assistant'"
        if i == 0 and role != "user":
            return 'messages: first message must use the "user" role'
        if role == previous:
            return f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'
        previous = role
        blocks = _blocks(message.get("content"), where)
        if isinstance(blocks, str):
            return blocks
        if role == "user":
            answered = [b.get("tool_use_id") for b in blocks if b["type"] == "tool_result"]
            leading = list(itertools.takewhile(lambda b: b["type"] == "tool_result", blocks))
            if len(leading) != len(answered):
                return f"{where}: tool_result blocks must come first in the content, before any other block"
            for tool_use_id in answered:
                if tool_use_id not in pending:
                    return (
                        f"{where}.content: unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )
            missing = pending - set(answered)
            if missing:
                return (
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(sorted(missing))}. Each `tool_use` block must have a corresponding `tool_result` "
                    "block in the next message."
                )
            pending = set()
        else:
            if any(b["type"] == "tool_result" for b in blocks):
                return f"{where}: tool_result blocks are only allowed in user messages"
            for j, block in enumerate(blocks):
                if block["type"] == "tool_use":
                    if (
                        not block.get("id")
                        or not block.get("name")
                        or not isinstance(block.get("input"), dict)
                    ):
                        return f"{where}.content.{j}: tool_use blocks need id, name and an object input"
                    pending.add(block["id"])
    if pending:
        return (
            f"messages.{len(messages) - 1}: `tool_use` ids were found without `tool_result` blocks immediately "
            f"after: {', '.join(sorted(pending))}"
        )
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for k, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
                return f"tools.{k}.name: Field required"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{k}.custom.input_schema.type: Input should be 'object'"
            if "parameters" in tool or "function" in tool:
                return f"tools.{k}: Extra inputs are not permitted"
    return None


def text_pieces(text: str) -> list[str]:
    """Token-like pieces: words with their leading space."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0]


def json_fragments(text: str, size: int = 5) -> list[str]:
    """`partial_json` fragments cut every `size` characters, inside strings and numbers too."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def events_for(reply: Reply, model: str, seq: int) -> list[tuple[str, dict[str, Any]]]:
    """The (event type, data) sequence of one streamed reply."""
    start_usage: dict[str, Any] = {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": reply.cache_creation_input_tokens,
        "cache_read_input_tokens": reply.cache_read_input_tokens,
        "output_tokens": 1,
        "service_tier": "standard",
    }
    message: dict[str, Any] = {
        "id": f"msg_fake{seq:04d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    out: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": message})]
    out.append(("ping", {"type": "ping"}))
    index = 0
    if reply.text:
        out.append(
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        for piece in text_pieces(reply.text):
            delta = {"type": "text_delta", "text": piece}
            out.append(
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for n, (name, arguments) in enumerate(reply.tool_calls):
        block = {"type": "tool_use", "id": f"toolu_fake{seq:04d}x{n}", "name": name, "input": {}}
        out.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        # The API's first input_json_delta is often empty; the rest cut the JSON anywhere.
        for fragment in ["", *json_fragments(json.dumps(arguments))]:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            out.append(
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    stop = reply.stop_reason or ("tool_use" if reply.tool_calls else "end_turn")
    usage = {
        "input_tokens": reply.input_tokens,
        "cache_creation_input_tokens": reply.cache_creation_input_tokens,
        "cache_read_input_tokens": reply.cache_read_input_tokens,
        "output_tokens": reply.output_tokens,
    }
    out.append(
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": usage},
        )
    )
    out.append(("message_stop", {"type": "message_stop"}))
    return out


class FakeAnthropicServer(LoopbackServer):
    """`async with FakeAnthropicServer(replies) as server:` then point a client at `server.base_url`."""

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        api_key: str | None = "sk-ant-test",
        models: Sequence[str] = DEFAULT_MODELS,
    ) -> None:
        self.replies = list(replies)
        self.api_key = api_key
        self.models = list(models)
        self.requests: list[Received] = []
        self.refused: list[tuple[int, str]] = []  # (status, message) of every request turned away
        self.base_url = ""
        LoopbackServer.__init__(self)
        self._seq = 0
        self._fail_statuses: list[int] = []
        self._drop_next = False
        self._stall_next = False
        self._closing = asyncio.Event()  # set at shutdown: releases stalled requests

    # ------------------------------------------------------------ control (patterd.testing LLMControl)

    def queue_reply(self, text: str) -> None:
        """The next completion streams `text`."""
        self.replies.append(Reply(text=text))

    def fail_next(self, status: int) -> None:
        """Answer the next request (messages or models) with `status` and the API's error body."""
        self._fail_statuses.append(status)

    def drop_next(self) -> None:
        """Cut the next stream's connection after its first text delta, with no message_stop."""
        self._drop_next = True

    def stall_next(self) -> None:
        """Accept the next messages request (taking its reply) and answer nothing until shutdown."""
        self._stall_next = True

    def open_connections(self) -> int:
        return self.tcp_connections()

    def active_streams(self) -> int:
        """Replies still being streamed."""
        return sum(1 for r in self.requests if not r.ended.is_set())

    # ------------------------------------------------------------ server

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.base_url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        await super().__aexit__(*exc)

    def _refuse(
        self, status: int, message: str | None = None, retry_after: str | None = None
    ) -> web.Response:
        response = error_response(status, message, retry_after=retry_after)
        self.refused.append((status, message or MESSAGES.get(status, "")))
        return response

    def _check_headers(self, request: web.Request, *, body: bool) -> web.Response | None:
        if self._fail_statuses:
            return self._refuse(self._fail_statuses.pop(0))
        if self.api_key is not None:
            # The API takes the key as `x-api-key` (its documented header) or as a Bearer token
            # (what anthropic-sdk-python 2.14 sends).
            key = request.headers.get("x-api-key")
            bearer = request.headers.get("authorization", "")
            if key is None and bearer.startswith("Bearer "):
                key = bearer.removeprefix("Bearer ")
            if key is None:
                return self._refuse(401, "x-api-key header is required")
            if key != self.api_key:
                return self._refuse(401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return self._refuse(400, "anthropic-version: header is required")
        if version not in API_VERSIONS:
            return self._refuse(400, f"anthropic-version: invalid version {version!r}")
        if body and not request.headers.get("content-type", "").startswith("application/json"):
            return self._refuse(400, "content-type: must be application/json")
        return None

    async def _models(self, request: web.Request) -> web.Response:
        refused = self._check_headers(request, body=False)
        if refused is not None:
            return refused
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-10-01T00:00:00Z"}
            for m in self.models
        ]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]}
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        refused = self._check_headers(request, body=True)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._refuse(400, "There was an error parsing the body of your request as JSON.")
        problem = validate(body)
        if problem is not None:
            return self._refuse(400, problem)
        if body.get("stream") is not True:
            return self._refuse(
                400, "fake Anthropic server: only streaming requests (stream: true) are served"
            )
        received = Received(body, dict(request.headers))
        self.requests.append(received)
        if not self.replies:
            received.ended.set()
            return self._refuse(500, "fake Anthropic server: no scripted reply left")
        reply = self.replies.pop(0)
        if self._drop_next:
            self._drop_next = False
            # message_start, ping, content_block_start and one text delta reach the client, then nothing.
            reply = dataclasses.replace(reply, disconnect_after=4)
        if self._stall_next:
            self._stall_next = False
            await self._closing.wait()  # a vendor that accepted the request and went silent
            received.ended.set()
            return self._refuse(500, "fake Anthropic server: shutting down")
        if reply.status != 200:
            received.ended.set()
            return self._refuse(reply.status, retry_after=reply.retry_after)
        if reply.delay_secs:
            await asyncio.sleep(reply.delay_secs)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        response.headers["request-id"] = "req_fake0001"
        await response.prepare(request)
        try:
            await self._stream(request, response, received, reply)
        except (ConnectionResetError, ConnectionError):
            received.aborted = True  # the client hung up mid-stream (it cancelled the reply)
        except asyncio.CancelledError:
            received.aborted = True
            raise
        finally:
            received.ended.set()
        return response

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, received: Received, reply: Reply
    ) -> None:
        self._seq += 1
        events = events_for(reply, received.body["model"], self._seq)
        frames = [f"event: {kind}\ndata: {json.dumps(data)}\n\n" for kind, data in events]
        if reply.raw_events:
            frames[1:1] = list(reply.raw_events)
        if reply.stream_error is not None:
            # After the first text delta: the client has begun speaking when the server fails.
            cut = (
                next((i for i, (k, _) in enumerate(events) if k == "content_block_delta"), len(events) - 2)
                + 1
            )
            error = {"type": "error", "error": {"type": reply.stream_error, "message": "Overloaded"}}
            frames = [*frames[:cut], f"event: error\ndata: {json.dumps(error)}\n\n"]
        for i, frame in enumerate(frames):
            if reply.disconnect_after is not None and i >= reply.disconnect_after:
                transport = request.transport
                assert transport is not None
                transport.close()  # a dropped connection mid-stream, like a crashed upstream
                received.aborted = True
                return
            await response.write(frame.encode())
            received.events_sent += 1
            if reply.event_delay_secs:
                await asyncio.sleep(reply.event_delay_secs)
        await response.write_eof()
        received.completed = True

    def texts_sent(self) -> list[str]:
        """The last user message's text of every request, in order (what the caller said)."""
        out = []
        for r in self.requests:
            last = r.body["messages"][-1]
            content = last["content"]
            if isinstance(content, str):
                out.append(content)
            else:
                out.append(" ".join(b.get("text", "") for b in content if b.get("type") == "text"))
        return out
