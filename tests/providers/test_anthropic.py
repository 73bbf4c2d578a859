"""`llm.anthropic` against the fake Messages API over real sockets: streaming, tools, cancel, errors, retries, check, the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from patterd.calls.pipeline import PipelineEngine, PipelineOptions
from patterd.cost import price_usage
from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimitError,
)
from patterd.protocols.events import Usage
from patterd.providers.anthropic import DEFAULT_MODEL, SPEC, AnthropicLLM, Options, build, check
from patterd.providers.kinds import LLMChunk, LLMUsage, Message, TextDelta, ToolCallRequest, ToolSchema
from patterd.providers.spec import BuildContext
from patterd.testing import LLMSuite, Setup
from tests.calls.pipeline_fakes import FakeAudioOut, FakeCall, FakeSTT, FakeTTS, FakeVAD
from tests.fakes.anthropic import FakeAnthropicServer, Reply

KEY = "sk-ant-test"
END_CALL = ToolSchema("end_call", "Hang up when the caller is done.", {"type": "object", "properties": {}})
LOOKUP = ToolSchema(
    "lookup_order",
    "Look up an order by id.",
    {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
HISTORY = [Message("system", "You are a helpful receptionist."), Message("user", "When are you open?")]


def options(server: FakeAnthropicServer, **extra: Any) -> Options:
    values: dict[str, Any] = {"api_key": KEY, "base_url": server.base_url, "retry_backoff_ms": 10, **extra}
    return Options(**values)


async def collect(
    llm: AnthropicLLM, messages: Sequence[Message] = HISTORY, tools: Sequence[ToolSchema] = ()
) -> list[LLMChunk]:
    return [c async for c in llm.complete(messages, tools)]


def test_spec_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SPEC.key == "llm.anthropic" and SPEC.capabilities.tools and SPEC.check is check
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValidationError, match="ANTHROPIC_API_KEY"):
        Options()
    assert Options(base_url="http://127.0.0.1:9").api_key is None  # a keyless compatible gateway
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    opts = Options()
    assert opts.api_key is not None and opts.api_key.get_secret_value() == "sk-ant-env"
    assert opts.model == DEFAULT_MODEL == "claude-haiku-4-5" and opts.max_tokens == 1024
    assert "sk-ant-env" not in repr(opts)
    with pytest.raises(ValidationError):
        Options(temperature=1.5)  # the API's range is 0..1, not OpenAI's 0..2
    with pytest.raises(ValidationError):
        Options(max_tokens=0)
    with pytest.raises(ValidationError):
        Options(modle="x")  # type: ignore[call-arg]


async def test_streams_text_and_usage_with_the_api_headers_and_body() -> None:
    reply = Reply(text="We open at nine.", input_tokens=40, output_tokens=6, cache_read_input_tokens=100)
    async with FakeAnthropicServer([reply]) as server:
        async with build(options(server, temperature=0.3, max_tokens=200), BuildContext()) as llm:
            chunks = await collect(llm)
            assert llm.retries == 0 and llm.malformed == 0
    assert chunks == [
        TextDelta("We"),
        TextDelta(" open"),
        TextDelta(" at"),
        TextDelta(" nine."),
        LLMUsage(input_tokens=140, output_tokens=6, cached_tokens=100),
    ]
    sent = server.requests[0]
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "When are you open?"}]}],
        "stream": True,
        "system": "You are a helpful receptionist.",
        "temperature": 0.3,
    }
    assert server.open_connections() == 0  # the session is closed with the provider


async def test_tool_call_round_trip_is_accepted_by_the_server() -> None:
    replies = [
        Reply(text="Let me check.", tool_calls=[("lookup_order", {"order_id": "A-42"})]),
        Reply(text="Shipped."),
    ]
    async with FakeAnthropicServer(replies) as server, build(options(server), BuildContext()) as llm:
        first = await collect(llm, HISTORY, [LOOKUP, END_CALL])
        (call,) = [c for c in first if isinstance(c, ToolCallRequest)]
        assert call.name == "lookup_order" and call.arguments == {"order_id": "A-42"}
        history = [
            *HISTORY,
            Message("assistant", "Let me check.", tool_calls=(call,)),
            Message("tool", '{"status": "shipped"}', tool_call_id=call.id),
        ]
        second = await collect(llm, history, [LOOKUP, END_CALL])
    assert [c for c in second if isinstance(c, TextDelta)] == [TextDelta("Shipped.")]
    body = server.requests[1].body
    assert body["tools"][0] == {
        "name": "lookup_order",
        "input_schema": dict(LOOKUP.parameters),
        "description": "Look up an order by id.",
    }
    assert body["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "lookup_order",
        "input": {"order_id": "A-42"},
    }
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": '{"status": "shipped"}'}
    ]
    assert not server.refused


async def test_cancel_mid_reply_closes_the_stream_at_once() -> None:
    long = Reply(text=" ".join(["Here is a long answer."] * 60), event_delay_secs=0.01)
    async with FakeAnthropicServer([long, Reply(text="Again.")]) as server:
        async with build(options(server), BuildContext()) as llm:
            stream = llm.complete(HISTORY, ())
            first = await anext(aiter(stream))
            assert isinstance(first, TextDelta)
            started = time.monotonic()
            await stream.aclose()  # type: ignore[attr-defined]  # barge-in
            assert time.monotonic() - started < 1.0
            async with asyncio.timeout(5):
                await server.requests[0].ended.wait()
            assert server.requests[0].aborted and not server.requests[0].completed
            assert (
                server.requests[0].events_sent < 100
            )  # the fake stopped sending: nothing more was asked of it
            assert TextDelta("Again.") in await collect(llm)  # the provider is still usable
        async with asyncio.timeout(5):
            while server.open_connections():
                await asyncio.sleep(0.01)  # the server notices the closed socket on its own loop turn


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_are_fatal_and_name_the_key_variable(status: int) -> None:
    async with (
        FakeAnthropicServer([Reply(text="x")]) as server,
        build(options(server), BuildContext()) as llm,
    ):
        server.fail_next(status)
        with pytest.raises(ProviderAuthError, match="ANTHROPIC_API_KEY") as caught:
            await collect(llm)
        assert not caught.value.retryable and caught.value.provider == "anthropic"
        assert len(server.refused) == 1  # not retried
        assert KEY not in str(caught.value)


async def test_wrong_key_is_refused_by_the_fake_like_the_api() -> None:
    async with FakeAnthropicServer([Reply(text="x")]) as server:
        async with build(options(server, api_key="sk-ant-wrong"), BuildContext()) as llm:
            with pytest.raises(ProviderAuthError, match="invalid x-api-key"):
                await collect(llm)
            with pytest.raises(ProviderAuthError, match="ANTHROPIC_API_KEY"):
                await llm.check()
        async with build(options(server), BuildContext()) as llm:
            await llm.check()


@pytest.mark.parametrize("status", [429, 500, 529])
async def test_retryable_statuses_are_retried_with_backoff(status: int) -> None:
    replies = [Reply(status=status), Reply(status=status), Reply(text="Third time lucky.")]
    async with FakeAnthropicServer(replies) as server:
        async with build(options(server, retry_backoff_ms=40), BuildContext()) as llm:
            started = time.monotonic()
            chunks = await collect(llm)
            elapsed = time.monotonic() - started
            assert llm.retries == 2
    assert TextDelta(" lucky.") in chunks
    assert elapsed >= 0.04 + 0.08  # 40 ms, then doubled
    assert len(server.requests) == 3


async def test_retries_run_out_into_a_retryable_error_and_retry_after_is_honoured() -> None:
    replies = [Reply(status=529), Reply(status=429, retry_after="0.3"), Reply(status=529)]
    async with FakeAnthropicServer(replies) as server, build(options(server), BuildContext()) as llm:
        started = time.monotonic()
        with pytest.raises(ProviderConnectionError, match="overloaded_error: Overloaded") as caught:
            await collect(llm)
        assert time.monotonic() - started >= 0.3  # the server's retry-after beat our 20 ms backoff
        assert caught.value.retryable and llm.retries == 2 and len(server.requests) == 3
    async with FakeAnthropicServer([Reply(status=429)]) as server:
        async with build(options(server, max_retries=0), BuildContext()) as llm:
            with pytest.raises(ProviderRateLimitError, match="rate_limit_error"):
                await collect(llm)


async def test_bad_request_is_not_retried_and_carries_the_api_message() -> None:
    async with (
        FakeAnthropicServer([Reply(text="x")]) as server,
        build(options(server), BuildContext()) as llm,
    ):
        with pytest.raises(ProviderError, match="unexpected `tool_use_id`") as caught:
            await collect(llm, [Message("tool", "x", tool_call_id="toolu_nope")])
        assert not caught.value.retryable and len(server.refused) == 1


async def test_error_event_after_text_is_retryable_but_not_retried_by_the_provider() -> None:
    replies = [Reply(text="We open at nine.", stream_error="overloaded_error"), Reply(text="unused")]
    async with FakeAnthropicServer(replies) as server, build(options(server), BuildContext()) as llm:
        got: list[LLMChunk] = []
        with pytest.raises(ProviderError, match="overloaded_error") as caught:
            async for chunk in llm.complete(HISTORY, ()):
                got.append(chunk)
        assert got == [TextDelta("We")]  # repeating the request would say "We" twice
        assert caught.value.retryable and len(server.requests) == 1


async def test_error_event_before_any_text_is_retried() -> None:
    replies = [Reply(text="", stream_error="overloaded_error"), Reply(text="Fine now.")]
    async with FakeAnthropicServer(replies) as server, build(options(server), BuildContext()) as llm:
        chunks = await collect(llm)
        assert TextDelta(" now.") in chunks and llm.retries == 1 and len(server.requests) == 2


async def test_dropped_connection_is_a_retryable_connection_error() -> None:
    async with (
        FakeAnthropicServer([Reply(text="a b c d e")]) as server,
        build(options(server), BuildContext()) as llm,
    ):
        server.drop_next()
        with pytest.raises(ProviderConnectionError) as caught:
            await collect(llm)
        assert caught.value.retryable and caught.value.provider == "anthropic"


async def test_malformed_events_are_counted_and_the_reply_goes_on() -> None:
    junk = [
        "event: content_block_delta\ndata: {broken\n\n",
        'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 7, "delta": {}}\n\n',
        "event: message_start\ndata: 42\n\n",
    ]
    async with FakeAnthropicServer([Reply(text="Still here.", raw_events=junk)]) as server:
        async with build(options(server), BuildContext()) as llm:
            chunks = await collect(llm)
            assert llm.malformed == 3
    assert [c for c in chunks if isinstance(c, TextDelta)] == [TextDelta("Still"), TextDelta(" here.")]


async def test_tool_input_that_is_not_json_is_a_protocol_error() -> None:
    bad = [
        'event: content_block_start\ndata: {"type": "content_block_start", "index": 5, '
        '"content_block": {"type": "tool_use", "id": "toolu_x", "name": "f", "input": {}}}\n\n',
        'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 5, '
        '"delta": {"type": "input_json_delta", "partial_json": "{\\"a\\": tru"}}\n\n',
        'event: content_block_stop\ndata: {"type": "content_block_stop", "index": 5}\n\n',
    ]
    async with FakeAnthropicServer([Reply(text="x", raw_events=bad)]) as server:
        async with build(options(server), BuildContext()) as llm:
            with pytest.raises(ProviderProtocolError, match="not JSON"):
                await collect(llm)


async def test_unreachable_server_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = Options(
        api_key=KEY, base_url=f"http://127.0.0.1:{port}", timeout_secs=2, max_retries=1, retry_backoff_ms=1
    )
    async with build(opts, BuildContext()) as llm:
        with pytest.raises(ProviderConnectionError, match=str(port)):
            await collect(llm)
        with pytest.raises(ProviderConnectionError):
            await llm.check()


def test_usage_is_priced_as_claude_haiku_4_5() -> None:
    # 1M uncached input at $1, 1M cache reads at $0.10, 1M output at $5 (the pipeline's quantities).
    quantities = {"input_tokens": 1e6, "cached_input_tokens": 1e6, "output_tokens": 1e6}
    assert price_usage("anthropic", quantities) == pytest.approx(6.10)


# ------------------------------------------------------------------ in the pipeline


async def test_pipeline_greeting_tool_call_and_usage() -> None:
    """A call that opens with a greeting and ends with end_call, as the pipeline drives any LLM."""
    replies = [
        Reply(text="Let me look that up.", tool_calls=[("lookup_order", {"order_id": "42"})]),
        Reply(text="It ships tomorrow. Goodbye!", tool_calls=[("end_call", {})], input_tokens=60),
        Reply(text="unused"),
    ]
    opts = PipelineOptions(
        endpointing_ms=80, flush_grace_ms=300, retry_backoff_ms=10, stt_name="fake", tts_name="fake"
    )
    async with (
        FakeAnthropicServer(replies) as server,
        build(options(server), BuildContext()) as llm,
        FakeAudioOut() as audio,
    ):
        call = FakeCall(
            audio,
            first_message="Hello, this is the shop.",
            tools=[LOOKUP, END_CALL],
            tool_results={"lookup_order": '{"status": "shipped"}', "end_call": "ending the call"},
        )
        engine = PipelineEngine(FakeSTT(), llm, FakeTTS(ms_per_char=1), FakeVAD(), options=opts)
        async with engine.session(call) as session:
            task = asyncio.get_running_loop().create_task(session.run())
            try:
                await call.wait_lines("assistant", 1)  # the greeting
                session.push_text("where is order 42?")
                await call.wait(lambda: ("end_call", {}) in call.tool_calls)
                await call.wait(lambda: len(call.of(Usage)) >= 3)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    assert call.tool_calls == [("lookup_order", {"order_id": "42"}), ("end_call", {})]
    first, second, third = (r.body["messages"] for r in server.requests[:3])
    # The greeting opened the call, so a placeholder user turn comes first (the API refuses an assistant one).
    assert [m["role"] for m in first] == ["user", "assistant", "user"]
    assert first[1]["content"] == [{"type": "text", "text": "Hello, this is the shop."}]
    assert second[-1]["content"][0]["type"] == "tool_result"
    assert third[-1]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_fake0002x0",
        "content": "ending the call",
    }
    assert server.requests[0].body["system"] == "You are a helpful receptionist."
    usage = [u for u in call.of(Usage) if u.component == "llm"]
    assert {u.provider for u in usage} == {"anthropic"} and len(usage) >= 2
    assert not server.refused


# ------------------------------------------------------------------ the shared behavioural suite


class Control:
    """LLMControl over FakeAnthropicServer."""

    def __init__(self, fake: FakeAnthropicServer) -> None:
        self.fake = fake
        self.queue_reply = fake.queue_reply
        self.fail_next = fake.fail_next
        self.drop_next = fake.drop_next
        self.stall_next = fake.stall_next
        self.open_connections = fake.open_connections
        self.active_streams = fake.active_streams


@contextlib.asynccontextmanager
async def suite_setup() -> AsyncIterator[Setup[Any, Control]]:
    async with FakeAnthropicServer() as fake:

        def opts(key: str = KEY) -> Options:
            return Options(
                api_key=key, base_url=fake.base_url, timeout_secs=1, max_retries=1, retry_backoff_ms=10
            )

        yield Setup(
            provider="anthropic",
            key_variable="ANTHROPIC_API_KEY",
            build=lambda: build(opts(), BuildContext()),
            build_bad_key=lambda: build(opts("sk-ant-wrong"), BuildContext()),
            control=Control(fake),
            check=check,
            secrets=(KEY, "sk-ant-wrong"),
        )


@pytest.mark.parametrize("case", LLMSuite.cases())
async def test_behavioural_suite(case: str) -> None:
    await LLMSuite(suite_setup).run(case)
