"""`llm.openai`: Chat Completions streaming with tools, for OpenAI and any compatible server (Ollama, vLLM, llama.cpp).

Docs followed: platform.openai.com API reference "Create chat completion" (streaming,
stream_options.include_usage, tools), "List models" (`GET /v1/models`, used by `check`), and the
error codes guide (401 bad key, 429 rate limit or quota, 500/503 server trouble). The wire format
lives in `patterd.protocols.openai_chat`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, SecretStr, model_validator

from patterd.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    error_for_status,
)
from patterd.protocols import openai_chat as wire
from patterd.providers.kinds import LLMChunk, LLMUsage, Message, TextDelta, ToolCallRequest, ToolSchema
from patterd.providers.spec import (
    BuildContext,
    Capabilities,
    ProviderOptions,
    ProviderSpec,
    env_secret,
    getenv,
)

NAME = "openai"
OPENAI_HOST = "api.openai.com"
OPENAI_URL = "https://api.openai.com/v1"


class Options(ProviderOptions):
    """Options of `llm.openai`."""

    api_key: SecretStr | None = Field(default_factory=env_secret("OPENAI_API_KEY"))
    model: str = "gpt-4o-mini"
    # $OPENAI_BASE_URL as the OpenAI SDK reads it: lets the default LLM of a pipeline agent without
    # `llm:` reach a compatible server (or a test fake) without adding an llm section.
    base_url: str = Field(
        default_factory=lambda: getenv("OPENAI_BASE_URL") or OPENAI_URL,
        description=f"default $OPENAI_BASE_URL, else {OPENAI_URL}",
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    timeout_secs: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _key_when_needed(self) -> Options:
        # Local compatible servers (Ollama, vLLM, llama.cpp) usually run without a key.
        if self.api_key is None and urlsplit(self.base_url).hostname == OPENAI_HOST:
            raise ValueError(
                f"llm.openai needs api_key (or the OPENAI_API_KEY environment variable) for base_url {self.base_url}"
            )
        return self


def to_wire(message: Message) -> wire.ChatMessage:
    """A kinds.Message in the protocol's shape."""
    calls = tuple(
        wire.ChatToolCall(c.id, c.name, json.dumps(dict(c.arguments), separators=(",", ":")))
        for c in message.tool_calls
    )
    return wire.ChatMessage(message.role, message.content, calls, message.tool_call_id)


class OpenAILLM:
    """A live `llm.openai`: one HTTP session, one streaming request per `complete`."""

    name = NAME

    def __init__(self, options: Options, http: aiohttp.ClientSession) -> None:
        self.options = options
        self._http = http
        self._base = options.base_url.rstrip("/")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.options.api_key is not None:
            headers["Authorization"] = f"Bearer {self.options.api_key.get_secret_value()}"
        return headers

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema]
    ) -> AsyncIterator[LLMChunk]:
        """Stream one reply: TextDelta pieces, then ToolCallRequests, then LLMUsage."""
        body = wire.build_request(
            self.options.model,
            [to_wire(m) for m in messages],
            [wire.FunctionTool(t.name, t.description, t.parameters) for t in tools],
            temperature=self.options.temperature,
            max_tokens=self.options.max_tokens,
        )
        url = f"{self._base}/chat/completions"
        decoder = wire.ChatStreamDecoder()
        try:
            async with self._http.post(url, json=body, headers=self._headers()) as response:
                if response.status != 200:
                    raise status_error(response.status, await response.read(), url)
                async for data in response.content.iter_any():
                    for event in decoder.feed(data):
                        chunk = to_chunk(event)
                        if chunk is not None:
                            yield chunk
                for event in decoder.close():
                    chunk = to_chunk(event)
                    if chunk is not None:
                        yield chunk
        except wire.ChatProtocolError as exc:
            raise ProviderProtocolError(f"{url}: {exc}", provider=NAME) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderConnectionError(
                f"{url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
            ) from exc
        if not decoder.done and decoder.finish_reason is None:
            raise ProviderConnectionError(
                f"{url}: the stream ended before the reply was complete", provider=NAME
            )

    async def check(self) -> None:
        """Probe the key and the server: `GET {base_url}/models`."""
        url = f"{self._base}/models"
        try:
            async with self._http.get(url, headers=self._headers()) as response:
                if response.status != 200:
                    raise status_error(response.status, await response.read(), url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderConnectionError(
                f"{url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
            ) from exc


def to_chunk(event: wire.ChatEvent) -> LLMChunk | None:
    """A protocol event as an LLM chunk (None: nothing for the caller); stream errors raise."""
    if isinstance(event, wire.ContentDelta):
        return TextDelta(event.text)
    if isinstance(event, wire.ToolCallDone):
        return ToolCallRequest(event.id, event.name, event.arguments)
    if isinstance(event, wire.UsageReport):
        return LLMUsage(event.prompt_tokens, event.completion_tokens, event.cached_tokens)
    if isinstance(event, wire.StreamError):
        retryable = event.type in {"server_error", "rate_limit_exceeded"} or event.code in {
            "server_error",
            "rate_limit_exceeded",
        }
        raise ProviderError(f"chat stream error: {event.message}", provider=NAME, retryable=retryable)
    return None


def status_error(status: int, body: bytes, url: str) -> ProviderError:
    """The ProviderError for a non-200 answer, carrying the API's own message."""
    return error_for_status(
        status,
        f"{url}: {wire.error_message(body, status)}",
        provider=NAME,
        auth_hint="check api_key / OPENAI_API_KEY",
    )


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[OpenAILLM]:
    """One aiohttp session for the provider's lifetime."""
    timeout = aiohttp.ClientTimeout(total=None, connect=options.timeout_secs, sock_read=options.timeout_secs)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        yield OpenAILLM(options, http)


async def check(provider: Any) -> None:
    """`patterd check --probe`: list models with the configured key."""
    await provider.check()


SPEC = ProviderSpec(
    kind="llm",
    name=NAME,
    options=Options,
    build=build,
    summary="OpenAI Chat Completions (streaming, tools); any OpenAI-compatible server via base_url",
    check=check,
    capabilities=Capabilities(streaming=True, tools=True, needs_network=True),
)
