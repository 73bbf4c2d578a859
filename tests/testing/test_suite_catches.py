"""The suites fail providers that break the contract: llm.openai wrapped to misbehave, against its fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from patterd.errors import ProviderAuthError, ProviderConnectionError
from patterd.providers import openai_llm
from patterd.providers.kinds import LLMChunk, LLMUsage, Message, ToolSchema
from patterd.testing import LLMSuite, Setup
from tests.testing.adapters import ChatControl, openai_llm_setup


class Broken:
    """An LLM that delegates to a real one but drops usage or misreports auth errors."""

    def __init__(self, inner: Any, fault: str) -> None:
        self.inner = inner
        self.fault = fault
        self.name = inner.name

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema]
    ) -> AsyncIterator[LLMChunk]:
        try:
            async for chunk in self.inner.complete(messages, tools):
                if self.fault == "no_usage" and isinstance(chunk, LLMUsage):
                    continue
                yield chunk
        except ProviderAuthError as exc:
            if self.fault == "auth_retryable":
                raise ProviderConnectionError(str(exc), provider=exc.provider) from exc
            raise


def broken(fault: str) -> Any:
    @asynccontextmanager
    async def setup() -> AsyncIterator[Setup[Any, ChatControl]]:
        async with openai_llm_setup() as good:
            real_build = good.build

            @asynccontextmanager
            async def build() -> AsyncIterator[Any]:
                async with real_build() as llm:
                    yield Broken(llm, fault)

            good.build = build
            yield good

    return setup


@asynccontextmanager
async def leaky_setup() -> AsyncIterator[Setup[Any, ChatControl]]:
    """llm.openai on an HTTP session its build does not close: its keep-alive socket outlives the provider."""
    async with openai_llm_setup() as good, aiohttp.ClientSession() as leaked:
        options = openai_llm.Options(api_key="sk-test", base_url=good.control.fake.base_url)

        @asynccontextmanager
        async def build() -> AsyncIterator[Any]:
            yield openai_llm.OpenAILLM(options, leaked)

        good.build = build
        yield good


@pytest.mark.parametrize(
    ("setup", "case", "says"),
    [
        (broken("no_usage"), "streams_text_and_usage", "no LLMUsage"),
        (broken("auth_retryable"), "auth_errors_are_fatal", "expected ProviderAuthError"),
        (leaky_setup, "sockets_closed", "every connection to the fake to be closed"),
    ],
)
async def test_a_broken_provider_fails_its_case(setup: Any, case: str, says: str) -> None:
    with pytest.raises(AssertionError, match=says):
        await LLMSuite(setup, timeout=1.0).run(case)


async def test_unknown_case_and_case_list() -> None:
    assert LLMSuite.cases()[0] == "streams_text_and_usage" and "check_probe" in LLMSuite.cases()
    with pytest.raises(ValueError, match="has no case 'nope'"):
        await LLMSuite(openai_llm_setup).run("nope")
