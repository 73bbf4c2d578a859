"""Helpers the streaming-STT vendor tests share: wait for a condition, read a stream, push audio, build."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from patterd.errors import ProviderError
from patterd.providers.kinds import Transcript
from patterd.testing import CountingProxy
from tests.fakes.deepgram import frames

P = TypeVar("P")


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (checked every 10 ms)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class Collector:
    """Reads a stream's transcripts in the background; a ProviderError ending it is kept in `error`."""

    def __init__(self, stream: AsyncIterable[Transcript]) -> None:
        self.items: list[Transcript] = []
        self.error: ProviderError | None = None
        self.task = asyncio.create_task(self._run(stream))

    async def _run(self, stream: AsyncIterable[Transcript]) -> None:
        try:
            async for item in stream:
                self.items.append(item)
        except ProviderError as exc:
            self.error = exc

    def finals(self) -> list[Transcript]:
        return [t for t in self.items if t.is_final]


def push(stream: Any, audio: bytes) -> None:
    """`audio` into the stream in 20 ms frames, as a carrier delivers it."""
    for frame in frames(audio):
        stream.push_audio(frame)


@asynccontextmanager
async def built(provider: AbstractAsyncContextManager[P]) -> AsyncIterator[P]:
    """The provider `build()` made, checking its HTTP session is closed with it."""
    async with provider as stt:
        yield stt
        http = getattr(stt, "_http")  # noqa: B009 - private to the provider, read by its tests only
    assert http.closed, "the provider's HTTP session is closed with it"


class ProxiedControl:
    """The STTControl parts the fakes share: a fake reached through a CountingProxy that counts every socket."""

    def __init__(self, fake: Any, proxy: CountingProxy) -> None:
        self.fake = fake
        self.proxy = proxy

    def open_connections(self) -> int:
        return self.proxy.open_connections()

    def active_streams(self) -> int:
        return int(self.fake.open_connections)

    def audio_received(self) -> int:
        return sum(s.audio_bytes for s in self.fake.sessions)
