"""A throwaway third-party plugin: an `llm.echo` provider that repeats the caller, for the plugin tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from patterd.providers.kinds import LLMUsage, Message, TextDelta, ToolSchema
from patterd.providers.spec import BuildContext, ProviderOptions, ProviderSpec


class EchoOptions(ProviderOptions):
    """Options of the echo LLM."""

    prefix: str = "You said:"


class EchoLLM:
    """Replies with the last user message, prefixed."""

    name = "echo"

    def __init__(self, options: EchoOptions) -> None:
        self.options = options

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSchema]) -> AsyncIterator[Any]:
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        for word in f"{self.options.prefix} {last}".split():
            yield TextDelta(word + " ")
        yield LLMUsage(0, 0)


@contextlib.asynccontextmanager
async def build(options: EchoOptions, ctx: BuildContext) -> AsyncIterator[EchoLLM]:
    yield EchoLLM(options)


SPEC = ProviderSpec(
    kind="llm", name="echo", options=EchoOptions, build=build, summary="Echoes the caller (sample plugin)"
)
NOT_A_SPEC = {"kind": "llm"}
WRONG_NAME = ProviderSpec(
    kind="llm", name="other", options=EchoOptions, build=build, summary="declares another name"
)
