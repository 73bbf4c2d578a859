"""One `stt.assemblyai` session: caller audio coalesced into chunks, Turns as transcripts, ForceEndpoint, close codes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
import structlog

from patterd.errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderProtocolError,
    ProviderRateLimitError,
)
from patterd.protocols import assemblyai as wire
from patterd.providers import ws_stt
from patterd.providers.kinds import Transcript

if TYPE_CHECKING:
    from patterd.providers.assemblyai import AssemblyAISTT, Options

log = structlog.get_logger("patterd.providers.assemblyai")

NAME = "assemblyai"
KEY_ENV = "ASSEMBLYAI_API_KEY"
AUTH_HINT = f"check api_key or {KEY_ENV}"


class AssemblyAIStream(ws_stt.Stream):
    """One call's live recognition (kinds.STTStream) over an open session."""

    task_prefix = "assemblyai"
    _log = log

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: Options, owner: AssemblyAISTT) -> None:
        super().__init__(ws, owner)
        self._options = options
        self._chunker = wire.Chunker(options.chunk_ms)
        self._changed = asyncio.Condition()  # a Turn arrived, a turn ended, or the session ended
        self._finals = 0  # turns ended with words (each queued one final)
        self._open_turn: int | None = None  # turn_order of a turn with words not ended yet
        self._ended_turns: set[int] = set()  # turn orders whose final was queued (formatted copies skipped)
        self._unformatted: dict[int, wire.Turn] = {}  # ended turns waiting for their formatted copy
        # audio_bytes (ws_stt.Stream) counts the padding of a tail too
        self._pushed = 0  # caller audio bytes accepted by push_audio (no padding)
        self.chunks_sent = 0
        self.session_id = ""
        self.termination: wire.Termination | None = None

    # -------- kinds.STTStream (the transcripts: ws_stt.Stream)

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (8 kHz μ-law), never blocks; sent in `chunk_ms` chunks."""
        if not ulaw or self._closing or self._ended:
            return
        self._pushed += len(ulaw)
        for chunk in self._chunker.push(ulaw):
            self._send_q.put_nowait(chunk)

    async def flush(self) -> None:
        """Send the held-back audio and ForceEndpoint; return once the turn's final is queued (or none came)."""
        if self._closing or self._ended:
            return
        async with self._changed:
            wanted = self._finals + 1
        tail = self._chunker.drain()
        if tail:
            self._send_q.put_nowait(tail)
        self._send_q.put_nowait(ws_stt.Mark())
        loop = asyncio.get_running_loop()
        started = loop.time()
        idle_until = started + self._options.flush_idle_secs
        deadline = started + self._options.flush_timeout_secs
        async with self._changed:
            while not (self._finals >= wanted or self._ended):
                now = loop.time()
                # Nothing heard in this turn: the server has nothing to end, so do not hold the pipeline.
                limit = deadline if self._open_turn is not None else min(idle_until, deadline)
                if now >= limit:
                    if self._open_turn is not None:
                        log.warning("assemblyai ForceEndpoint not answered in time", turn=self._open_turn)
                    return
                try:
                    async with asyncio.timeout(limit - now):
                        await self._changed.wait()
                except TimeoutError:
                    continue

    # -------- sending

    async def _sender(self) -> None:
        await ws_stt.send_loop(
            self._ws,
            self._send_q,
            end=lambda: wire.TERMINATE,
            mark=lambda: wire.FORCE_ENDPOINT,
            sent=self._sent,
            log=log,
            event="assemblyai send stopped",
        )

    def _sent(self, chunk: bytes) -> None:
        self.audio_bytes += len(chunk)
        self.chunks_sent += 1

    # -------- receiving

    async def _receiver(self) -> None:
        ws = self._ws
        error, reason = await ws_stt.read_loop(ws, self._on_text, label="stt.assemblyai", provider=NAME)
        code = ws.close_code
        if error is None and (not self._closing or wire.close_kind(code) not in (None, "retry")):
            error = close_error(code, reason)
        self._ended = True
        for turn in list(self._unformatted.values()):
            self._final(turn)  # the formatted copy will not come: the plain words are what was said
        if error is not None:
            self._out.put_nowait(error)
        self._out.put_nowait(None)
        async with self._changed:
            self._changed.notify_all()

    async def _on_text(self, data: str) -> bool:
        """Handle one message (never the last: the server ends a session by closing it)."""
        try:
            message = wire.parse(data)
        except wire.AssemblyAIProtocolError as exc:
            ws_stt.count_malformed(log, "assemblyai message skipped", exc, self, self._owner)
            return False
        if isinstance(message, wire.Turn):
            await self._on_turn(message)
        elif isinstance(message, wire.Begin):
            self.session_id = message.id
        elif isinstance(message, wire.Termination):
            self.termination = message
        elif isinstance(message, wire.ErrorMessage):
            log.warning("assemblyai error message", error=message.error[:200], code=message.error_code)
        return False

    async def _on_turn(self, turn: wire.Turn) -> None:
        order = turn.turn_order
        if order in self._ended_turns:
            return  # a copy of a turn already final (formatted after plain, or a late repeat)
        async with self._changed:
            if not turn.end_of_turn:
                if turn.text.strip():
                    self._open_turn = order
                    self._out.put_nowait(
                        Transcript(turn.text.strip(), is_final=False, audio_ms=self._audio_ms())
                    )
            elif self._options.format_turns and not turn.turn_is_formatted:
                self._unformatted[order] = turn  # the formatted copy follows
            else:
                self._final(turn)
            self._changed.notify_all()

    def _audio_ms(self) -> float:
        """Caller audio the server had been sent (the silence padding a tail is not the caller's)."""
        return min(self.audio_bytes, self._pushed) / 8

    def _final(self, turn: wire.Turn) -> None:
        """Queue the ended turn's final (nothing when it holds no words)."""
        self._unformatted.pop(turn.turn_order, None)
        self._ended_turns.add(turn.turn_order)
        if self._open_turn == turn.turn_order:
            self._open_turn = None
        text = turn.transcript.strip()
        if not text:
            return
        self._finals += 1
        self._out.put_nowait(
            Transcript(
                text,
                is_final=True,
                end_of_utterance=True,
                confidence=turn.confidence,
                audio_ms=self._audio_ms(),
            )
        )

    # -------- closing

    async def close(self) -> None:
        """Send the tail and Terminate, wait briefly for the last Turn and Termination, close the socket."""
        if not self._closing and not self._ended:
            tail = self._chunker.drain()
            if tail:
                self._send_q.put_nowait(tail)
        await self._end(
            self._options.close_timeout_secs, "assemblyai session did not end in time; closing our side"
        )


class Stalled(ProviderConnectionError):
    """The server took the connection and sent no Begin in time (retryable by the pipeline, not here)."""


def close_error(code: int | None, reason: str) -> ProviderError:
    """The ProviderError for a session the server closed (or dropped) with `code`."""
    known = wire.CLOSE_REASONS.get(code or 0, "")
    said = f"closed the session with {code}" + (f": {reason or known}" if reason or known else "")
    kind = wire.close_kind(code)
    if kind == "auth":
        return ProviderAuthError(f"stt.assemblyai {said} ({AUTH_HINT})", provider=NAME)
    if kind == "rate_limit":
        return ProviderRateLimitError(f"stt.assemblyai {said}", provider=NAME)
    if kind == "protocol":
        return ProviderProtocolError(f"stt.assemblyai {said}", provider=NAME)
    if code is None or code == 1006:
        said = "dropped the connection without a close frame"
    return ProviderConnectionError(f"stt.assemblyai {said}", provider=NAME)
