"""`llm.anthropic`: Claude through the Messages API (`POST /v1/messages`, SSE streaming, tools).

Docs followed: docs.claude.com API reference "Messages" and "Models" (`GET /v1/models`, used by
`check`), "Streaming Messages", "Errors" (401 authentication_error, 403 permission_error,
429 rate_limit_error, 500 api_error, 529 overloaded_error; an `error` event can arrive after
HTTP 200). The SDK (anthropic 2.14.0) retries 408/409/429/5xx with doubling backoff, honouring
`retry-after`; this provider does the same before any of the reply has been yielded. The wire
format lives in `patterd.protocols.anthropic`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    error_for_status,
)
from patterd.protocols import anthropic as wire
from patterd.providers.kinds import LLMChunk, LLMUsage, Message, TextDelta, ToolCallRequest, ToolSchema
from patterd.providers.spec import BuildContext, Capabilities, ProviderOptions, ProviderSpec, env_secret

log = structlog.get_logger(__name__)

NAME = "anthropic"
KEY_VARIABLE = "ANTHROPIC_API_KEY"
AUTH_HINT = f"check api_key / {KEY_VARIABLE}"
# Claude Haiku 4.5 (alias of claude-haiku-4-5-20251001): the fast, cheap tier a voice turn wants,
# listed in the anthropic SDK's model names and not in its deprecated-models table.
DEFAULT_MODEL = "claude-haiku-4-5"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_AFTER_SECS = (
    5.0  # a longer wait would leave the caller in silence; fail and let the pipeline apologise
)


class Options(ProviderOptions):
    """Options of `llm.anthropic`."""

    api_key: SecretStr | None = Field(default_factory=env_secret(KEY_VARIABLE))
    model: str = Field(
        default=DEFAULT_MODEL,
        description="Claude model id or alias; default prices are claude-haiku-4-5's, "
        "set `pricing: {anthropic: ...}` for another model",
    )
    max_tokens: int = Field(default=1024, gt=0, description="reply length cap (the API requires one)")
    temperature: float | None = Field(default=None, ge=0, le=1, description="0..1 (the API's range)")
    base_url: str = Field(default=wire.DEFAULT_BASE_URL, description="requests go to {base_url}/v1/messages")
    timeout_secs: float = Field(default=30.0, gt=0, description="connect and per-read timeout")
    max_retries: int = Field(
        default=2, ge=0, le=10, description="retries of 429/5xx/529 before any of the reply was streamed"
    )
    retry_backoff_ms: int = Field(
        default=250, ge=0, le=60000, description="first retry delay, doubled for each next one"
    )

    @model_validator(mode="after")
    def _key_when_needed(self) -> Options:
        # A compatible gateway on another host may run without a key; Anthropic's own API never does.
        if (
            self.api_key is None
            and urlsplit(self.base_url).hostname == urlsplit(wire.DEFAULT_BASE_URL).hostname
        ):
            raise ValueError(f"llm.anthropic needs api_key (or the {KEY_VARIABLE} environment variable)")
        return self


def to_turn(message: Message) -> wire.Turn:
    """A kinds.Message in the protocol's shape."""
    calls = tuple(wire.ToolUse(c.id, c.name, c.arguments) for c in message.tool_calls)
    return wire.Turn(message.role, message.content, calls, message.tool_call_id)


class _Retry(Exception):
    """An attempt failed before anything was yielded, in a way worth trying again."""

    def __init__(self, error: ProviderError, delay: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay  # the server's retry-after, when it gave one


class AnthropicLLM:
    """A live `llm.anthropic`: one HTTP session, one streaming request per `complete`."""

    name = NAME

    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._base = options.base_url.rstrip("/")
        self.malformed = 0  # stream events that could not be read (logged, skipped)
        self.retries = 0  # attempts repeated after a retryable failure

    def __repr__(self) -> str:
        return f"AnthropicLLM(model={self.options.model!r}, base_url={self._base!r})"

    def _headers(self) -> dict[str, str]:
        key = self.options.api_key.get_secret_value() if self.options.api_key is not None else None
        return wire.headers(key)

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema]
    ) -> AsyncIterator[LLMChunk]:
        """Stream one reply: TextDelta pieces, ToolCallRequests as their blocks close, then LLMUsage."""
        try:
            body = wire.build_request(
                self.options.model,
                self.options.max_tokens,
                [to_turn(m) for m in messages],
                [wire.Tool(t.name, t.description, t.parameters) for t in tools],
                temperature=self.options.temperature,
            )
        except ValueError as exc:
            raise ProviderError(f"llm.anthropic: {exc}", provider=NAME) from exc
        payload = wire.dumps(body)
        attempt = 0
        while True:
            state = _Attempt()
            try:
                # aclosing: a barge-in closing this generator must close the HTTP response now, not at GC.
                async with aclosing(self._attempt(payload, state)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            except _Retry as retry:
                if state.yielded or attempt >= self.options.max_retries:
                    raise retry.error from None
                delay = self.options.retry_backoff_ms / 1000 * 2**attempt
                if retry.delay is not None:
                    delay = max(delay, retry.delay)
                attempt += 1
                self.retries += 1
                log.warning("anthropic request failed; retrying", error=str(retry.error), delay_secs=delay)
                await asyncio.sleep(delay)

    async def _attempt(self, payload: bytes, state: _Attempt) -> AsyncGenerator[LLMChunk, None]:
        url = f"{self._base}{wire.MESSAGES_PATH}"
        decoder = wire.MessageStreamDecoder()
        try:
            async with self._http.post(url, data=payload, headers=self._headers()) as response:
                if response.status != 200:
                    error = status_error(response.status, await response.read(), url)
                    if response.status in RETRY_STATUSES:
                        raise _Retry(error, _retry_after(response.headers.get("retry-after")))
                    raise error
                async for data in response.content.iter_any():
                    for event in decoder.feed(data):
                        chunk = self._chunk(event, url)
                        if chunk is not None:
                            state.yielded = True
                            yield chunk
                for event in decoder.close():
                    chunk = self._chunk(event, url)
                    if chunk is not None:
                        yield chunk
        except wire.AnthropicProtocolError as exc:
            raise ProviderProtocolError(f"{url}: {exc}", provider=NAME) from exc
        except _StreamFailed as failed:
            if failed.error.retryable:
                raise _Retry(failed.error, None) from None
            raise failed.error from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = ProviderConnectionError(
                f"{url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
            )
            raise _Retry(error, None) from exc
        if not decoder.done:
            raise _Retry(
                ProviderConnectionError(f"{url}: the stream ended before message_stop", provider=NAME), None
            )

    def _chunk(self, event: wire.StreamEvent, url: str) -> LLMChunk | None:
        """A protocol event as an LLM chunk (None: nothing for the caller); an `error` event raises."""
        if isinstance(event, wire.TextPiece):
            return TextDelta(event.text)
        if isinstance(event, wire.ToolUseDone):
            return ToolCallRequest(event.id, event.name, event.input)
        if isinstance(event, wire.Usage):
            return LLMUsage(event.total_input_tokens, event.output_tokens, event.cache_read_input_tokens)
        if isinstance(event, wire.StreamError):
            raise _StreamFailed(stream_error(event, url))
        if isinstance(event, wire.Skipped):
            self.malformed += 1
            log.warning("anthropic stream event skipped", reason=event.reason[:200], count=self.malformed)
        return None

    async def check(self) -> None:
        """Probe the key and the server: `GET {base_url}/v1/models`."""
        url = f"{self._base}{wire.MODELS_PATH}"
        headers = self._headers()
        del headers["content-type"]
        try:
            async with self._http.get(url, headers=headers) as response:
                if response.status != 200:
                    raise status_error(response.status, await response.read(), url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderConnectionError(
                f"{url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
            ) from exc


class _Attempt:
    """What one request attempt has done so far."""

    yielded = False  # a chunk reached the caller: retrying would repeat it


class _StreamFailed(Exception):
    """An `error` event inside the stream (carried out of the generator to the retry decision)."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return None if seconds is None or seconds < 0 else min(seconds, MAX_RETRY_AFTER_SECS)


def stream_error(event: wire.StreamError, url: str) -> ProviderError:
    """The ProviderError for an `error` event after HTTP 200."""
    message = f"{url}: stream error {event.type or 'unknown'}: {event.message}"
    if event.type in wire.AUTH_ERROR_TYPES:
        return ProviderAuthError(f"{message} ({AUTH_HINT})", provider=NAME)
    return ProviderError(message, provider=NAME, retryable=event.retryable)


def status_error(status: int, body: bytes, url: str) -> ProviderError:
    """The ProviderError for a non-200 answer, carrying the API's error type and message."""
    kind, message = wire.error_detail(body)
    text = f"{url}: HTTP {status}: {kind + ': ' if kind else ''}{message}"
    if status == 529 or kind == "overloaded_error":
        return ProviderConnectionError(text, provider=NAME)  # overloaded: the same request may pass soon
    return error_for_status(status, text, provider=NAME, auth_hint=AUTH_HINT)


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[AnthropicLLM]:
    """One aiohttp session for the provider's lifetime."""
    timeout = aiohttp.ClientTimeout(total=None, connect=options.timeout_secs, sock_read=options.timeout_secs)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield AnthropicLLM(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: list models with the configured key."""
    await provider.check()


SPEC = ProviderSpec(
    kind="llm",
    name=NAME,
    options=Options,
    build=build,
    summary="Anthropic Claude Messages API (SSE streaming, tools); 429/5xx/529 retried with backoff",
    check=check,
    capabilities=Capabilities(streaming=True, tools=True, needs_network=True),
)
