"""The `engine.openai_realtime` provider: one OpenAI Realtime (GA) websocket per call, speaking for the agent.

Followed: developers.openai.com/api/docs/guides/realtime-websocket and realtime-conversations
(connection, session.update, barge-in with conversation.item.truncate, function calling), the
client/server event reference, and openai-python `types/realtime/`. Connects to
`{base_url}?model=...` with `Authorization: Bearer` and no `OpenAI-Beta` header (that selects the
retired beta shapes). The wire format lives in `patterd.protocols.openai_realtime`; audio is
8 kHz μ-law toward the call and PCM16 24 kHz (default) or μ-law toward OpenAI.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from patterd.providers.kinds import CallContext
from patterd.providers.openai_realtime_link import OpenAIRealtimeOptions, check
from patterd.providers.openai_realtime_session import RealtimeSession
from patterd.providers.spec import BuildContext, Capabilities, ProviderSpec

# Options, socket and probe live in openai_realtime_link, the per-call session in openai_realtime_session;
# importers of this module still find them here.
__all__ = ["SPEC", "OpenAIRealtimeOptions", "RealtimeSession", "build", "check"]


class OpenAIRealtimeEngine:
    """The built provider: opens one RealtimeSession per call (implements kinds.Engine)."""

    def __init__(
        self, options: OpenAIRealtimeOptions, build: BuildContext, http: aiohttp.ClientSession
    ) -> None:
        self.options = options
        self.build = build
        self.http = http  # every call's websocket goes through this one session
        self.warnings = options.config_warnings()  # logged by the daemon at start and reload

    @asynccontextmanager
    async def _session(self, call: CallContext) -> AsyncIterator[RealtimeSession]:
        session = RealtimeSession(self.options, call, self.http)
        try:
            yield session
        finally:
            await session.tools.stop()  # a tool still running when the call ends is stopped, not left behind

    def session(self, call: CallContext) -> contextlib.AbstractAsyncContextManager[RealtimeSession]:
        return self._session(call)


@asynccontextmanager
async def build(options: OpenAIRealtimeOptions, ctx: BuildContext) -> AsyncIterator[OpenAIRealtimeEngine]:
    async with aiohttp.ClientSession(connector=_connector()) as http:
        yield OpenAIRealtimeEngine(options, ctx, http)


def _connector() -> aiohttp.TCPConnector:
    # One websocket per call holds its connection for the whole call: no pool limit.
    return aiohttp.TCPConnector(limit=0)


SPEC = ProviderSpec(
    kind="engine",
    name="openai_realtime",
    options=OpenAIRealtimeOptions,
    build=build,
    summary="OpenAI Realtime speech-to-speech engine (GA websocket, PCM24 or μ-law)",
    check=check,
    capabilities=Capabilities(
        streaming=True, tools=True, sample_rates=(8000, 24000), notes="GA Realtime API"
    ),
)
