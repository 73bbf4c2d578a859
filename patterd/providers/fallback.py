"""Fallback chains: an STT, TTS or LLM made of providers tried in order, each behind a circuit breaker."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

import structlog

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.providers.breaker import Breaker as Breaker  # re-exported: its old import path
from patterd.providers.kinds import (
    LLM,
    STT,
    TTS,
    LLMChunk,
    Message,
    STTStream,
    TextDelta,
    ToolCallRequest,
    ToolSchema,
    Transcript,
)

log = structlog.get_logger("patterd.fallback")

Kind = Literal["stt", "tts", "llm"]
# (kind, from, to, reason) → the call's provider_fallback event; each call binds its own
Report = Callable[[Kind, str, str, str], None]
ULAW_BYTES_PER_MS = 8
REPLAY_MS = 2000  # STT audio kept to re-feed the next provider: the open utterance, at most this much
TTS_STALL_SECS = (
    1.0  # a TTS silent this long (first or next chunk) is failed over: the caller hears no longer gap
)


P = TypeVar("P")


@dataclass
class Member(Generic[P]):
    """One provider of a chain: its name (for events and metrics), config path and breaker."""

    name: str
    path: str
    provider: P
    breaker: Breaker = field(default_factory=Breaker)


class _Chain(Generic[P]):
    """Members in order; new calls start on the first one whose breaker is not open."""

    kind: Kind

    def __init__(self, members: Sequence[Member[P]]) -> None:
        if not members:
            raise ValueError("a fallback chain needs at least one member")
        self.members = list(members)

    @property
    def name(self) -> str:
        return self.members[0].name

    def start_index(self) -> int:
        for index, member in enumerate(self.members):
            if member.breaker.allows():
                return index
        return 0  # every member is cooling down: the call must go on, try them all in order

    def fail(self, index: int, exc: ProviderError, report: Report | None) -> int:
        """Count a failure of member `index`; the index of the next member (reported), or raise `exc`."""
        member = self.members[index]
        member.breaker.failed()
        if isinstance(exc, ProviderAuthError):  # a broken key is a config mistake: say so loudly
            log.error("provider refused its credentials; falling back", kind=self.kind, provider=member.path)
        nxt = index + 1
        if nxt >= len(self.members):
            raise exc
        reason = _reason(exc)
        log.warning(
            "provider fallback",
            kind=self.kind,
            from_provider=member.name,
            to_provider=self.members[nxt].name,
            reason=reason,
        )
        if report is not None:
            report(self.kind, member.name, self.members[nxt].name, reason)
        return nxt


def _reason(exc: ProviderError) -> str:
    status = "auth" if isinstance(exc, ProviderAuthError) else "retryable" if exc.retryable else "error"
    return f"{status}: {exc}"[:300]


# ---------------------------------------------------------------- STT


ChainT = TypeVar("ChainT", bound="_Chain[Any]")


class _Bound(Generic[ChainT]):
    """A chain for one call: the member in use now; switches are reported through `report`."""

    def __init__(self, chain: ChainT, report: Report | None) -> None:
        self.chain = chain
        self.report = report
        self.active = chain.start_index()

    @property
    def name(self) -> str:
        """The member answering now (usage is billed to it)."""
        return self.chain.members[self.active].name


class FallbackSTT(_Chain[STT]):
    """An STT whose stream moves to the next member when the active one fails, re-feeding recent audio."""

    kind: Kind = "stt"

    def stream(self) -> AbstractAsyncContextManager[STTStream]:
        return self.bound(None).stream()

    def bound(self, report: Report | None) -> _BoundSTT:
        """This chain for one call: switches are reported through `report`."""
        return _BoundSTT(self, report)


class _BoundSTT(_Bound[FallbackSTT]):
    def stream(self) -> AbstractAsyncContextManager[STTStream]:
        return _ChainStream(self)


class _ChainStream:
    """One call's STT stream over the chain; transcripts' audio_ms stay on this stream's own timeline."""

    def __init__(self, bound: _BoundSTT) -> None:
        self._bound = bound
        self._cm: AbstractAsyncContextManager[STTStream] | None = None
        self._inner: STTStream | None = None
        self._ring: collections.deque[tuple[float, bytes]] = collections.deque()  # (start ms, frame)
        self._ring_bytes = 0
        self._pushed_ms = 0.0  # audio given to this stream so far
        self._offset_ms = 0.0  # where the active member's stream starts on our timeline
        self._committed_ms = 0.0  # audio up to here is in finals already delivered: never re-fed
        self._broken: ProviderError | None = None
        self._closed = False  # leaving the stream: a member ending now is no reason to switch
        self._flush_pending = False  # a flush the failed member never answered goes to the next one

    async def __aenter__(self) -> _ChainStream:
        await self._open_first()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        await self._close_inner(et, exc, tb)

    async def _open_first(self) -> None:
        while True:
            try:
                await self._open(self._bound.active)
                return
            except ProviderError as exc:
                await self._close_inner()  # entered but failed while re-fed: close it before the next
                self._bound.active = self._bound.chain.fail(self._bound.active, exc, self._bound.report)

    async def _open(self, index: int) -> None:
        cm = self._bound.chain.members[index].provider.stream()
        inner = await cm.__aenter__()
        self._cm, self._inner, self._broken = cm, inner, None
        # Re-feed the open utterance (at most REPLAY_MS) so the words in flight are not lost.
        replay = [(start, frame) for start, frame in self._ring if start >= self._committed_ms]
        self._offset_ms = replay[0][0] if replay else self._pushed_ms
        for _, frame in replay:
            inner.push_audio(frame)
        if self._flush_pending and replay:
            await inner.flush()

    async def _close_inner(
        self,
        et: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        cm, self._cm, self._inner = self._cm, None, None
        if cm is not None:
            with contextlib.suppress(Exception):  # the member already failed; its close may too
                await cm.__aexit__(et, exc, tb)

    async def _switch(self, exc: ProviderError) -> None:
        """The active member failed: close it, open the next one (or raise when none is left)."""
        await self._close_inner()
        self._bound.active = self._bound.chain.fail(self._bound.active, exc, self._bound.report)
        await self._open_first()

    def push_audio(self, ulaw: bytes) -> None:
        self._ring.append((self._pushed_ms, ulaw))
        self._ring_bytes += len(ulaw)
        self._pushed_ms += len(ulaw) / ULAW_BYTES_PER_MS
        while self._ring and self._ring_bytes - len(self._ring[0][1]) >= REPLAY_MS * ULAW_BYTES_PER_MS:
            self._ring_bytes -= len(self._ring.popleft()[1])
        if self._inner is None or self._broken is not None:
            return  # switching: the frame is in the ring and goes to the next member
        try:
            self._inner.push_audio(ulaw)
        except ProviderError as exc:
            self._broken = exc  # the reader switches when it sees it
        except Exception as exc:  # a closed socket may raise anything here; the reader decides
            self._broken = ProviderConnectionError(f"sending audio failed: {exc}")

    async def flush(self) -> None:
        self._flush_pending = True
        if self._inner is None or self._broken is not None:
            return
        try:
            await self._inner.flush()
        except ProviderError as exc:
            self._broken = exc

    def __aiter__(self) -> AsyncIterator[Transcript]:
        return self._transcripts()

    async def _transcripts(self) -> AsyncIterator[Transcript]:
        while True:
            inner = self._inner
            try:
                if inner is None or self._broken is not None:
                    raise self._broken or ProviderConnectionError("no STT stream")
                async for transcript in inner:
                    self._bound.chain.members[self._bound.active].breaker.succeeded()
                    if transcript.audio_ms is not None:
                        transcript = replace(transcript, audio_ms=transcript.audio_ms + self._offset_ms)
                    if transcript.is_final:
                        self._flush_pending = False
                    if transcript.is_final and transcript.text.strip() and transcript.audio_ms is not None:
                        self._committed_ms = transcript.audio_ms  # a later switch re-feeds nothing before it
                    yield transcript
                    if self._broken is not None:
                        break
                if self._broken is None:
                    raise ProviderConnectionError(
                        "the STT stream ended while the call was live", provider=self.name
                    )
            except ProviderError as exc:
                if self._closed:
                    return
                await self._switch(exc)

    @property
    def name(self) -> str:
        return self._bound.name


# ---------------------------------------------------------------- TTS


class FallbackTTS(_Chain[TTS]):
    """A TTS that re-synthesizes the current sentence on the next member when the active one fails."""

    kind: Kind = "tts"

    def synthesize(self, text: str) -> AsyncIterator[bytes]:
        return self.bound(None).synthesize(text)

    def bound(self, report: Report | None) -> _BoundTTS:
        return _BoundTTS(self, report)


class _BoundTTS(_Bound[FallbackTTS]):
    async def synthesize(self, text: str) -> AsyncIterator[bytes]:
        while True:
            member = self.chain.members[self.active]
            # a member that goes quiet is given up after TTS_STALL_SECS while another one can take over
            stall = TTS_STALL_SECS if self.active + 1 < len(self.chain.members) else None
            try:
                stream = member.provider.synthesize(text)
                try:
                    while True:
                        try:
                            async with asyncio.timeout(stall):
                                chunk = await anext(stream)
                        except StopAsyncIteration:
                            break
                        except TimeoutError:
                            raise ProviderConnectionError(
                                f"no audio for {stall} s", provider=member.name
                            ) from None
                        yield chunk
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
                member.breaker.succeeded()
                return
            except ProviderError as exc:
                # the whole sentence again on the next member: the caller may hear its start twice
                self.active = self.chain.fail(self.active, exc, self.report)


# ---------------------------------------------------------------- LLM


class FallbackLLM(_Chain[LLM]):
    """An LLM that retries a turn on the next member if the active one fails before writing anything."""

    kind: Kind = "llm"

    def complete(self, messages: Sequence[Message], tools: Sequence[ToolSchema]) -> AsyncIterator[LLMChunk]:
        return self.bound(None).complete(messages, tools)

    def bound(self, report: Report | None) -> _BoundLLM:
        return _BoundLLM(self, report)


class _BoundLLM(_Bound[FallbackLLM]):
    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSchema]
    ) -> AsyncIterator[LLMChunk]:
        while True:
            member = self.chain.members[self.active]
            produced = False
            try:
                stream = member.provider.complete(messages, tools)
                try:
                    async for chunk in stream:
                        if isinstance(chunk, TextDelta | ToolCallRequest):
                            produced = True
                        yield chunk
                finally:
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
                member.breaker.succeeded()
                return
            except ProviderError as exc:
                self.active = self.chain.fail(self.active, exc, self.report)
                if produced:
                    # words were already spoken: end this reply with them; the next turn uses the next member
                    raise


def bind(provider: Any, report: Report) -> Any:
    """`provider` for one call: a chain reports its switches through `report`; others are as they are."""
    if isinstance(provider, FallbackSTT | FallbackTTS | FallbackLLM):
        return provider.bound(report)
    return provider


def active_name(provider: Any, default: str) -> str:
    """The member a call-bound chain uses now (usage is billed to it), else `default`."""
    if isinstance(provider, _BoundSTT | _BoundTTS | _BoundLLM):
        return provider.name
    return default
