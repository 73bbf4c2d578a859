"""`llm.openai` against the fake Chat Completions server: options, streaming, tools, errors, check."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimitError,
)
from patterd.providers.kinds import LLMChunk, LLMUsage, Message, TextDelta, ToolCallRequest, ToolSchema
from patterd.providers.openai_llm import SPEC, OpenAILLM, Options, build
from patterd.providers.spec import BuildContext
from tests.fakes.openai_chat import FakeChatServer, Reply

TOOL = ToolSchema("lookup", "Find an order.", {"type": "object", "properties": {"id": {"type": "string"}}})


async def collect(
    llm: OpenAILLM, messages: Sequence[Message], tools: Sequence[ToolSchema] = ()
) -> list[LLMChunk]:
    return [c async for c in llm.complete(messages, tools)]


def test_spec() -> None:
    assert SPEC.key == "llm.openai" and SPEC.capabilities.tools and SPEC.check is not None


def test_key_required_for_openai_but_not_for_local_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="OPENAI_API_KEY"):
        Options()
    assert Options(base_url="http://127.0.0.1:11434/v1").api_key is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    opts = Options()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "sk-env"
    assert "sk-env" not in repr(opts)
    with pytest.raises(ValidationError):
        Options(api_key="k", modle="x")  # type: ignore[call-arg]


async def test_streams_text_and_usage_and_sends_options() -> None:
    async with FakeChatServer([Reply(text="Hi there.", prompt_tokens=5, completion_tokens=3)]) as server:
        opts = Options(
            api_key="sk-test", base_url=server.base_url, model="gpt-4o", temperature=0.3, max_tokens=50
        )
        async with build(opts, BuildContext()) as llm:
            chunks = await collect(llm, [Message("system", "Be nice."), Message("user", "hello")])
    assert chunks == [TextDelta("Hi"), TextDelta(" there."), LLMUsage(5, 3, 0)]
    sent = server.requests[0]
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert (
        sent.body["model"] == "gpt-4o" and sent.body["temperature"] == 0.3 and sent.body["max_tokens"] == 50
    )
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "hello"},
    ]


async def test_tool_call_round_trip_is_accepted_by_the_server() -> None:
    replies = [Reply(tool_calls=[("lookup", {"id": "42"})]), Reply(text="Shipped.")]
    async with (
        FakeChatServer(replies) as server,
        build(Options(api_key="sk-test", base_url=server.base_url), BuildContext()) as llm,
    ):
        first = await collect(llm, [Message("user", "order 42?")], [TOOL])
        (call,) = [c for c in first if isinstance(c, ToolCallRequest)]
        assert call.name == "lookup" and call.arguments == {"id": "42"}
        history = [
            Message("user", "order 42?"),
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", '{"status": "shipped"}', tool_call_id=call.id),
        ]
        second = await collect(llm, history, [TOOL])
    assert TextDelta("Shipped.") in second
    sent = server.requests[1].body["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"id":"42"}'}
    assert sent[2] == {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": call.id}


async def test_no_authorization_header_without_a_key() -> None:
    async with (
        FakeChatServer([Reply(text="ok")], api_key=None) as server,
        build(Options(base_url=server.base_url), BuildContext()) as llm,
    ):
        await collect(llm, [Message("user", "hi")])
    assert "Authorization" not in server.requests[0].headers


@pytest.mark.parametrize(
    ("reply", "error", "retryable", "text"),
    [
        (Reply(status=500), ProviderError, True, "HTTP 500: The server had an error"),
        (
            Reply(status=429, error_message="Rate limit reached for gpt-4o-mini"),
            ProviderRateLimitError,
            True,
            "Rate limit reached",
        ),
        (Reply(text="a b c d e", disconnect_after=3), ProviderConnectionError, True, "ClientPayloadError"),
        (Reply(text="a b c", stream_error="overloaded"), ProviderError, True, "overloaded"),
    ],
)
async def test_errors_map_to_the_provider_error_tree(
    reply: Reply, error: type[ProviderError], retryable: bool, text: str
) -> None:
    async with (
        FakeChatServer([reply]) as server,
        build(Options(api_key="sk-test", base_url=server.base_url), BuildContext()) as llm,
    ):
        with pytest.raises(error, match=text) as caught:
            await collect(llm, [Message("user", "hi")])
    assert caught.value.retryable is retryable and caught.value.provider == "openai"


async def test_bad_key_and_bad_request_carry_the_api_message() -> None:
    async with FakeChatServer([]) as server:
        async with build(Options(api_key="sk-wrong", base_url=server.base_url), BuildContext()) as llm:
            with pytest.raises(ProviderAuthError, match="Incorrect API key provided"):
                await collect(llm, [Message("user", "hi")])
            with pytest.raises(ProviderAuthError):
                await llm.check()
        async with build(Options(api_key="sk-test", base_url=server.base_url), BuildContext()) as llm:
            with pytest.raises(ProviderError, match="preceeding message") as caught:
                await collect(llm, [Message("tool", "x", tool_call_id="nope")])
            assert not caught.value.retryable
            await llm.check()


async def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with build(Options(base_url=f"http://127.0.0.1:{port}/v1", timeout_secs=2), BuildContext()) as llm:
        with pytest.raises(ProviderConnectionError, match=str(port)):
            await collect(llm, [Message("user", "hi")])
        with pytest.raises(ProviderConnectionError):
            await llm.check()
