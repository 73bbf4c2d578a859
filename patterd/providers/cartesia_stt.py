"""`stt.cartesia`: Cartesia's streaming STT (ink-whisper) websocket, one per call's stream, 8 kHz μ-law as is.

See `patterd.providers.cartesia` for the behaviour (finalize on flush, endpointing, close/done).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from pydantic import Field

from patterd.errors import (
    ProviderConnectionError,
    ProviderError,
    error_for_status,
)
from patterd.protocols import cartesia as wire
from patterd.providers import ws_stt
from patterd.providers.cartesia_common import AUTH_HINT, NAME, CartesiaOptions, log, probe, ws_connect
from patterd.providers.kinds import Transcript
from patterd.providers.spec import BuildContext


class STTOptions(CartesiaOptions):
    """Options of `stt.cartesia`."""

    model: str = "ink-whisper"
    language: str | None = "en"
    endpointing: bool = Field(
        default=True, description="a final Cartesia sends by itself (after silence) ends the turn"
    )
    max_silence_duration_secs: float | None = Field(
        default=None,
        gt=0,
        le=10,
        description="ink-whisper: silence before it finalizes by itself (null: its default)",
    )
    min_volume: float | None = Field(
        default=None, ge=0, le=1, description="ink-whisper: what counts as silence"
    )
    flush_timeout_secs: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="how long a flush waits for `flush_done` (then the stream is broken)",
    )
    close_timeout_secs: float = Field(default=2.0, gt=0, description="wait for `done` after `close`")

    def params(self) -> wire.STTParams:
        return wire.STTParams(
            model=self.model,
            language=self.language,
            max_silence_duration_secs=self.max_silence_duration_secs,
            min_volume=self.min_volume,
        )


class CartesiaSTTStream(ws_stt.Stream):
    """One call's live recognition (kinds.STTStream) over an open `/stt/websocket`."""

    task_prefix = "cartesia-stt"
    _log = log
    _owner: CartesiaSTT

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, options: STTOptions, owner: CartesiaSTT) -> None:
        super().__init__(ws, owner)
        self._options = options
        self._deltas = wire.finals_are_deltas(options.cartesia_version)
        self._segments: list[str] = []  # final texts of the open turn, as received
        self._flushes = asyncio.Condition()
        self._flush_asked = 0
        self._flush_done = 0
        self._done = False  # Cartesia sent `done`: the stream is over
        self._error: wire.ErrorMessage | None = None
        self.request_id = ""

    # -------- kinds.STTStream (push_audio: ws_stt.Stream)

    async def flush(self) -> None:
        """`finalize`; return once `flush_done` (and so the turn's final) came."""
        if self._closing or self._ended:
            return
        async with self._flushes:
            self._flush_asked += 1
            wanted = self._flush_asked
        self._send_q.put_nowait(ws_stt.Mark())
        answered = ws_stt.wait_answer(
            self._flushes, lambda: self._flush_done >= wanted or self._ended, self._options.flush_timeout_secs
        )
        if not await answered:
            # Cartesia always answers finalize: silence means the upstream hung. Give the turn what was
            # finalized, then end the stream with a retryable error so the pipeline reconnects.
            log.warning("cartesia finalize not answered", timeout_secs=self._options.flush_timeout_secs)
            self._end_turn()
            self._fail(
                ProviderConnectionError(
                    f"stt.cartesia did not answer finalize within {self._options.flush_timeout_secs} s",
                    provider=NAME,
                )
            )

    async def __aiter__(self) -> AsyncIterator[Transcript]:  # ends every reader, not just the first
        while True:
            item = await self._out.get()
            if item is None:
                self._out.put_nowait(None)  # a second reader (or a re-iteration) ends too
                return
            if isinstance(item, ProviderError):
                self._out.put_nowait(None)
                raise item
            yield item

    def _fail(self, error: ProviderError) -> None:
        if not self._ended:
            self._ended = True
            self._out.put_nowait(error)
            self._out.put_nowait(None)  # the socket goes when the pipeline leaves the stream (close())

    # -------- sending

    async def _sender(self) -> None:
        await ws_stt.send_loop(
            self._ws,
            self._send_q,
            end=lambda: wire.close_command(self._options.cartesia_version),
            mark=lambda: wire.FINALIZE,
            sent=self._sent,
            log=log,
            event="cartesia stt send stopped",
        )

    # -------- receiving

    async def _receiver(self) -> None:
        ws = self._ws
        error, _ = await ws_stt.read_loop(ws, self._on_text, label="stt.cartesia", provider=NAME)
        if error is None and not self._done and not self._closing:
            error = self._close_error(ws.close_code)
        self._end_turn()  # what was finalized is still what the caller said
        if not self._ended:
            self._ended = True
            if error is not None:
                self._out.put_nowait(error)
            self._out.put_nowait(None)
        async with self._flushes:
            self._flushes.notify_all()

    def _close_error(self, code: int | None) -> ProviderError:
        said = "dropped the connection" if code in (None, 1006) else f"closed the stream with {code}"
        if self._error is not None:
            said += f" after an error: {self._error.message[:200]}"
            if self._error.status_code is not None:
                return error_for_status(
                    self._error.status_code, f"stt.cartesia {said}", provider=NAME, auth_hint=AUTH_HINT
                )
        return ProviderConnectionError(f"stt.cartesia {said}", provider=NAME)

    async def _on_text(self, data: str) -> bool:
        """Handle one message; True once `done` came (the stream is over)."""
        try:
            message = wire.parse(data)
        except wire.CartesiaProtocolError as exc:
            ws_stt.count_malformed(log, "cartesia stt message skipped", exc, self, self._owner)
            return False
        if isinstance(message, wire.Transcript):
            self.request_id = message.request_id or self.request_id
            if message.is_final:
                if message.text.strip():
                    self._segments.append(message.text)
                async with self._flushes:
                    flushing = self._flush_done < self._flush_asked
                if self._options.endpointing and not flushing and not self._closing:
                    self._end_turn()  # ink-whisper finalized on silence by itself
                elif message.text.strip():
                    self._out.put_nowait(
                        Transcript(self._joined(), is_final=False, audio_ms=self._audio_ms())
                    )
            elif message.text.strip():
                shown = self._joined([*self._segments, message.text])
                self._out.put_nowait(Transcript(shown, is_final=False, audio_ms=self._audio_ms()))
        elif isinstance(message, wire.FlushDone):
            self._end_turn()
            async with self._flushes:
                self._flush_done += 1
                self._flushes.notify_all()
        elif isinstance(message, wire.Done):
            self._done = True
            return True
        elif isinstance(message, wire.ErrorMessage):
            self._error = message
            log.warning(
                "cartesia stt error message", message=message.message[:200], status=message.status_code
            )
        return False

    def _audio_ms(self) -> float:
        return self.audio_bytes / 8

    def _joined(self, parts: list[str] | None = None) -> str:
        parts = self._segments if parts is None else parts
        if self._deltas:
            return "".join(parts).strip()  # deltas carry their own spacing: never strip them one by one
        return " ".join(p.strip() for p in parts if p.strip())

    def _end_turn(self) -> None:
        if not self._segments:
            return
        text = self._joined()
        self._segments = []
        if text:
            self._out.put_nowait(
                Transcript(text, is_final=True, end_of_utterance=True, audio_ms=self._audio_ms())
            )

    # -------- closing

    async def close(self) -> None:
        """`close` after the audio already pushed, wait briefly for `done`, close the socket."""
        try:
            await self._end(
                self._options.close_timeout_secs,
                "cartesia stt stream did not close in time; closing our side",
                wait_receiver=lambda: not self._ended,
            )
        finally:
            self._owner.audio_seconds += self.audio_seconds


class CartesiaSTT(ws_stt.Provider[STTOptions, CartesiaSTTStream]):
    """The live `stt.cartesia` (kinds.STT): one HTTP session, one websocket per stream."""

    name = NAME

    def __init__(self, options: STTOptions, http: aiohttp.ClientSession) -> None:
        super().__init__(options, http)
        self.audio_seconds = 0.0  # over closed streams

    def __repr__(self) -> str:
        return f"CartesiaSTT(model={self.options.model!r}, base_url={self.options.base_url!r})"

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        url = wire.stt_url(self.options.base_url, self.options.params())
        return await ws_connect(self._http, url, self.options, "stt.cartesia")

    def _new_stream(self, ws: aiohttp.ClientWebSocketResponse) -> CartesiaSTTStream:
        return CartesiaSTTStream(ws, self.options, self)

    async def check(self) -> None:
        """`GET /voices?limit=1`: authenticated, cheap, not billed."""
        url = wire.http_url(self.options.base_url, wire.VOICES_PATH) + "?limit=1"
        await probe(self._http, url, self.options, "stt.cartesia")


@asynccontextmanager
async def build_stt(options: STTOptions, ctx: BuildContext) -> AsyncIterator[CartesiaSTT]:
    async with ws_stt.http_session(options.connect_timeout_secs) as http:
        yield CartesiaSTT(options, http)
