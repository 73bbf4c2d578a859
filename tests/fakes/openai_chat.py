"""A fake OpenAI Chat Completions server on 127.0.0.1: validates requests like the API, streams real SSE chunks.

Scripted with data: each request takes the next `Reply` (text, tool calls, or a failure).
Request validation follows the API reference "Create chat completion" (message roles, a tool
message needs tool_call_id and must answer a preceding assistant tool call, tools shape,
stream_options only with stream) and answers violations with a 400 and OpenAI's error JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from tests.fakes.speech_timeline import LoopbackServer

ROLES = {"system", "developer", "user", "assistant", "tool"}


@dataclass
class Reply:
    """What the server answers to one request."""

    text: str = ""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()  # (name, arguments)
    status: int = 200  # != 200: answer this status with an error body, no stream
    error_message: str = "The server had an error while processing your request."
    disconnect_after: int | None = None  # drop the connection after this many chunks
    delay_secs: float = 0.0  # before the first chunk
    chunk_delay_secs: float = 0.0  # between chunks
    prompt_tokens: int = 11
    completion_tokens: int = 7
    stream_error: str | None = None  # send `data: {"error": ...}` after the content
    stall: bool = False  # accept the request, then send nothing until the server shuts down (a hung upstream)


@dataclass
class Received:
    """One request as the server saw it, with stream timing for ordering assertions."""

    body: dict[str, Any]
    headers: dict[str, str]
    chunk_times: list[float] = field(default_factory=list)  # time.monotonic() of each chunk sent
    completed: bool = False  # the whole stream was written
    aborted: bool = False  # the client went away mid-stream
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # the stream is over, either way


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# The error body OpenAI sends with each status (error codes guide).
FAILURES = {
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to sample from this model", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for gpt-4o-mini", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later", "server_error", None),
}


def failure(status: int) -> web.Response:
    """OpenAI's answer with `status`."""
    message, type_, code = FAILURES.get(status, (f"HTTP {status}", "server_error", None))
    return web.json_response(error_body(message, type_, code=code), status=status)


def validate(body: Any) -> str | None:
    """What is wrong with a request body, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty array"
    open_calls: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"Invalid value for 'messages[{i}].role': {m.get('role') if isinstance(m, dict) else m!r}"
        role = m["role"]
        if role == "tool":
            if not m.get("tool_call_id"):
                return f"Missing required parameter: 'messages[{i}].tool_call_id'."
            if m["tool_call_id"] not in open_calls:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    f"with 'tool_calls' (messages[{i}].tool_call_id {m['tool_call_id']!r})."
                )
            open_calls.discard(m["tool_call_id"])
            if not isinstance(m.get("content"), str):
                return f"Invalid type for 'messages[{i}].content': expected a string."
            continue
        if open_calls:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(sorted(open_calls))}"
            )
        if role == "assistant" and m.get("tool_calls"):
            for j, call in enumerate(m["tool_calls"]):
                fn = call.get("function") if isinstance(call, dict) else None
                if (
                    not isinstance(call, dict)
                    or call.get("type") != "function"
                    or not call.get("id")
                    or not isinstance(fn, dict)
                ):
                    return f"Invalid value for 'messages[{i}].tool_calls[{j}]'."
                if not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                    return f"Invalid type for 'messages[{i}].tool_calls[{j}].function.arguments': expected a string."
                open_calls.add(call["id"])
            if m.get("content") is not None and not isinstance(m["content"], str):
                return f"Invalid type for 'messages[{i}].content'."
        elif not isinstance(m.get("content"), str):
            return f"Invalid type for 'messages[{i}].content': expected a string."
    if open_calls:
        return f"tool_call_ids without response messages: {', '.join(sorted(open_calls))}"
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "Invalid type for 'tools': expected an array."
        for k, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
                return f"Invalid value for 'tools[{k}]'."
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                return f"Missing required parameter: 'tools[{k}].function.name'."
            params = fn.get("parameters")
            if params is not None and (not isinstance(params, dict) or params.get("type") != "object"):
                return f"Invalid schema for function '{fn['name']}': schema must be a JSON Schema of 'type: \"object\"'."
    if "stream_options" in body and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    return None


def split_text(text: str) -> list[str]:
    """Token-like pieces: words with their leading space."""
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        pieces.append(word if i == 0 else " " + word)
    return [p for p in pieces if p]


class FakeChatServer(LoopbackServer):
    """`async with FakeChatServer(replies) as server:` then point a client at `server.base_url`."""

    def __init__(
        self,
        replies: Sequence[Reply] = (),
        *,
        api_key: str | None = "sk-test",
        models: Sequence[str] = ("gpt-4o-mini",),
    ) -> None:
        self.replies = list(replies)
        self.api_key = api_key
        self.models = list(models)
        self.requests: list[Received] = []
        self.base_url = ""
        LoopbackServer.__init__(self)
        self._request_event = asyncio.Event()
        self._seq = 0
        self._fail_statuses: list[int] = []  # one-shot HTTP errors for the next requests, any route
        self._release = asyncio.Event()  # set at shutdown: stalled requests end

    def fail_next(self, status: int) -> None:
        """Answer the next request (completions or models) with `status` and OpenAI's error body for it."""
        self._fail_statuses.append(status)

    def open_connections(self) -> int:
        return self.tcp_connections()

    def active_streams(self) -> int:
        """Completions still being answered."""
        return sum(1 for r in self.requests if not r.ended.is_set())

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_get("/v1/models", self._models)

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()
        await super().__aexit__(*exc)

    async def wait_requests(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least `n` requests arrived."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < n:
                self._request_event.clear()
                await self._request_event.wait()
        return self.requests

    def _auth(self, request: web.Request) -> web.Response | None:
        if self._fail_statuses:
            return failure(self._fail_statuses.pop(0))
        if self.api_key is None:
            return None
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response(
                error_body("Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"),
                status=401,
            )
        return None

    async def _models(self, request: web.Request) -> web.Response:
        denied = self._auth(request)
        if denied is not None:
            return denied
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(
                error_body("We could not parse the JSON body of your request."), status=400
            )
        problem = validate(body)
        if problem is not None:
            return web.json_response(error_body(problem), status=400)
        received = Received(body, dict(request.headers))
        self.requests.append(received)
        self._request_event.set()
        if not self.replies:
            return web.json_response(
                error_body("fake server: no scripted reply left", "server_error"), status=500
            )
        reply = self.replies.pop(0)
        if reply.status != 200:
            kind = "rate_limit_exceeded" if reply.status == 429 else "server_error"
            return web.json_response(error_body(reply.error_message, kind, code=kind), status=reply.status)
        if reply.stall:
            await self._release.wait()
            return web.Response(status=503)
        if reply.delay_secs:
            await asyncio.sleep(reply.delay_secs)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            await self._stream(request, response, received, reply, body)
        except ConnectionResetError:
            received.aborted = True  # the client hung up mid-stream (it cancelled the reply)
        except asyncio.CancelledError:
            received.aborted = True
            raise
        finally:
            received.ended.set()
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        received: Received,
        reply: Reply,
        body: dict[str, Any],
    ) -> None:
        self._seq += 1
        ident = f"chatcmpl-fake{self._seq:04d}"
        base = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        chunks: list[dict[str, Any]] = [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ]
        chunks += [
            {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
            for piece in split_text(reply.text)
        ]
        for n, (name, arguments) in enumerate(reply.tool_calls):
            text = json.dumps(arguments)
            half = len(text) // 2
            call_id = f"call_fake{self._seq}x{n}"
            first = {
                "index": n,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            chunks.append(
                {"index": 0, "delta": {"tool_calls": [first]}, "logprobs": None, "finish_reason": None}
            )
            for part in (text[:half], text[half:]):
                chunks.append(
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": n, "function": {"arguments": part}}]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
        finish = "tool_calls" if reply.tool_calls else "stop"
        chunks.append({"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish})
        events = [dict(base, choices=[c]) for c in chunks]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            }
            events.append(dict(base, choices=[], usage=usage))
        await response.write(b": keep-alive\n\n")
        for i, event in enumerate(events):
            if reply.disconnect_after is not None and i >= reply.disconnect_after:
                transport = request.transport
                assert transport is not None
                transport.close()  # a dropped connection mid-stream, like a crashed upstream
                received.aborted = True
                return
            if reply.stream_error is not None and i == len(events) - 2:
                await response.write(
                    f"data: {json.dumps(error_body(reply.stream_error, 'server_error'))}\n\n".encode()
                )
                received.completed = True
                return
            await response.write(f"data: {json.dumps(event)}\n\n".encode())
            received.chunk_times.append(time.monotonic())
            if reply.chunk_delay_secs:
                await asyncio.sleep(reply.chunk_delay_secs)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        received.completed = True
