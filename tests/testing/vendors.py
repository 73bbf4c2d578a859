"""Setups that run the vendor providers through patterd.testing against their fakes in tests/fakes."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from patterd.providers.spec import BuildContext
from patterd.testing import CountingProxy, Setup

# Keys the fakes accept.
DEEPGRAM_KEY = "dg-test-key"


class DeepgramControl:
    """STTControl over FakeDeepgramServer, reached through a CountingProxy that counts every socket."""

    def __init__(self, fake: Any, proxy: CountingProxy, fault: type[Any]) -> None:
        self.fake = fake
        self.proxy = proxy
        self._fault = fault

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        self.fake.say(text)  # the fake makes interim results from the audio's own timeline

    def fail_next(self, status: int) -> None:
        self.fake.fail(self._fault(status=status))

    def drop_next(self) -> None:
        self.fake.fail(self._fault(drop_after_results=1))

    def open_connections(self) -> int:
        return self.proxy.open_connections()

    def active_streams(self) -> int:
        return int(self.fake.open_connections)

    def audio_received(self) -> int:
        return sum(s.audio_bytes for s in self.fake.sessions)


@asynccontextmanager
async def deepgram_setup() -> AsyncIterator[Setup[Any, DeepgramControl]]:
    """`stt.deepgram` against tests/fakes/deepgram.py."""
    provider = importlib.import_module("patterd.providers.deepgram")
    fakes = importlib.import_module("tests.fakes.deepgram")
    async with fakes.FakeDeepgramServer(DEEPGRAM_KEY) as fake, CountingProxy(fake.port) as proxy:

        def options(key: str = DEEPGRAM_KEY) -> Any:
            return provider.Options(
                api_key=key, base_url=f"ws://127.0.0.1:{proxy.port}", endpointing_ms=80, retry_backoff_ms=10
            )

        yield Setup(
            provider="deepgram",
            key_variable="DEEPGRAM_API_KEY",
            build=lambda: provider.build(options(), BuildContext()),
            build_bad_key=lambda: provider.build(options("wrong-key"), BuildContext()),
            control=DeepgramControl(fake, proxy, fakes.Fault),
            secrets=(DEEPGRAM_KEY, "wrong-key"),
            check=provider.check,
            features=frozenset({"interim", "endpointing", "streaming_input"}),
        )


ANTHROPIC_KEY = "sk-ant-test"


@asynccontextmanager
async def anthropic_setup() -> AsyncIterator[Setup[Any, Any]]:
    """`llm.anthropic` against tests/fakes/anthropic.py (the fake is its own LLMControl)."""
    provider = importlib.import_module("patterd.providers.anthropic")
    fakes = importlib.import_module("tests.fakes.anthropic")
    async with fakes.FakeAnthropicServer(api_key=ANTHROPIC_KEY) as fake:

        def options(key: str = ANTHROPIC_KEY) -> Any:
            return provider.Options(
                api_key=key, base_url=fake.base_url, timeout_secs=1.0, retry_backoff_ms=10
            )

        yield Setup(
            provider="anthropic",
            key_variable="ANTHROPIC_API_KEY",
            build=lambda: provider.build(options(), BuildContext()),
            build_bad_key=lambda: provider.build(options("sk-ant-wrong"), BuildContext()),
            control=fake,
            check=provider.check,
            secrets=(ANTHROPIC_KEY, "sk-ant-wrong"),
        )
