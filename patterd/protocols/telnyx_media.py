"""Telnyx media streaming, sans-I/O: the websocket frames both ways and the MediaCodec the media leg runs.

developers.telnyx.com "Stream call media over WebSocket" (AsyncAPI `media-streaming.yml`): frames
`connected`, `start` {stream_id, start: {call_control_id, client_state, media_format}}, `media`
{sequence_number, media: {track, chunk, timestamp, payload}}, `dtmf`, `mark`, `error`, `stop`; to
Telnyx `media` {media: {payload}}, `mark` {mark: {name}}, `clear`. "Media frame order is not
guaranteed": `MediaDecoder` reorders by `media.chunk` in a small window.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from patterd.protocols import frames
from patterd.protocols.audio import alaw_to_ulaw
from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)
from patterd.protocols.media_codec import Notice
from patterd.protocols.telnyx_webhooks import STREAM_CODEC, TelnyxProtocolError, _text, decode_client_state

# ---------------------------------------------------------------- media websocket (Telnyx → us)


@dataclass(frozen=True, slots=True)
class MediaStreamError:
    """An `error` frame from Telnyx; the provider logs it, the call goes on."""

    code: str
    title: str
    detail: str


# A chunk number this far from the expected one is not reordering: a corrupted or forged frame, or (seen
# RESYNC_AFTER times in a row, consecutively numbered) a stream that was renumbered.
CHUNK_JUMP_LIMIT = 250  # 5 s of 20 ms frames
RESYNC_AFTER = 3


class MediaDecoder:
    """Turns Telnyx media-stream text frames into MediaEvents for one stream.

    Stateful only in the ways the protocol asks: the codec announced by `start` (PCMA is
    transcoded to μ-law) and chunk order (frames are not guaranteed to arrive in order, so a
    frame that skips ahead waits for the missing ones up to `reorder_window` frames; in-order
    frames pass straight through, so the window adds no delay on a healthy stream). A frame whose
    chunk is wildly off is set aside rather than trusted: one forged number must not make every
    later (correct) frame look late.
    """

    def __init__(self, reorder_window: int = 3) -> None:
        self.reorder_window = reorder_window
        self.stream_id = ""
        self.call_control_id = ""
        self.encoding = STREAM_CODEC
        self.started = False
        self.reordered = 0  # frames that arrived ahead of a missing one and were held back
        self.late = 0  # frames dropped because their slot had already passed (or duplicates)
        self.lost = 0  # frames never received, skipped once the window was full
        self.stray = 0  # frames dropped because their chunk was far from the stream's
        self._next_chunk: int | None = None
        self._held: dict[int, bytes] = {}
        self._stray_last: int | None = None
        self._stray_run = 0

    def feed(self, text: str | bytes) -> list[MediaEvent | MediaStreamError]:
        """Decode one frame; raises TelnyxProtocolError (and nothing else) when it is malformed."""
        try:
            msg = frames.load_object(text, "Telnyx")
        except frames.BadFrame as exc:
            raise TelnyxProtocolError(str(exc), exc.reason) from None
        event = msg.get("event")
        match event:
            case "connected":
                return []
            case "start":
                return [self._start(msg)]
            case "media":
                return list(self._media(msg))
            case "dtmf":
                try:
                    digit = frames.dtmf_digit(_obj(msg, "dtmf").get("digit"), "Telnyx")
                except frames.BadFrame as exc:
                    raise TelnyxProtocolError(str(exc), exc.reason) from None
                return [CallerDtmf(digit)]
            case "mark":
                name = _text(_obj(msg, "mark").get("name"))
                return [MarkPlayed(name)]
            case "error":
                err = msg.get("payload") or msg.get("error") or {}
                if not isinstance(err, dict):
                    err = {"detail": err}
                code = err.get("code", "")
                return [
                    MediaStreamError(
                        str(code)[:40] if isinstance(code, str | int | float) else "",
                        _text(err.get("title"))[:200],
                        _text(err.get("detail"))[:500],
                    )
                ]
            case "stop":
                flushed: list[MediaEvent | MediaStreamError] = [
                    CallerAudio(p) for _, p in sorted(self._held.items())
                ]
                self._held.clear()
                return [*flushed, StreamStopped("stop")]
            case _:
                raise TelnyxProtocolError(f"unknown Telnyx media event {event!r:.60}", "unknown_event")

    def _start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.started:  # a second start would switch the codec (and stream id) under a live call
            raise TelnyxProtocolError(
                f"Telnyx start on stream {self.stream_id!r:.40}, which has started already", "duplicate_start"
            )
        start = _obj(msg, "start")
        fmt = start.get("media_format") or {}
        encoding = _text(fmt.get("encoding")).upper() if isinstance(fmt, dict) else ""
        if encoding and encoding not in ("PCMU", "PCMA"):
            raise TelnyxProtocolError(
                f"Telnyx stream encoding {encoding!r:.40} is not supported; expected PCMU or PCMA"
            )
        self.started = True
        self.stream_id = _text(msg.get("stream_id"))
        self.call_control_id = _text(start.get("call_control_id"))
        self.encoding = encoding or STREAM_CODEC
        params = start.get("custom_parameters") or {}
        parameters = (
            {str(k): str(v) for k, v in params.items() if isinstance(v, str | int | float | bool)}
            if isinstance(params, dict)
            else {}
        )
        call_id = decode_client_state(_text(start.get("client_state")) or None)
        if call_id:
            parameters.setdefault("call_id", call_id)
        return StreamStarted(self.stream_id, self.call_control_id, parameters)

    def _media(self, msg: dict[str, Any]) -> list[MediaEvent | MediaStreamError]:
        media = _obj(msg, "media")
        track = media.get("track", "inbound")
        if not isinstance(track, str):
            raise TelnyxProtocolError(f"Telnyx media frame: track is {track!r:.40}, expected a string")
        if (track or "inbound") != "inbound":
            return []  # our own audio echoed back (both_tracks); never feed it to the agent
        try:
            payload = frames.b64_audio(media.get("payload"), "Telnyx")
        except frames.BadFrame as exc:
            raise TelnyxProtocolError(str(exc), exc.reason) from None
        if self.encoding == "PCMA":
            payload = alaw_to_ulaw(payload)
        chunk = _int(media.get("chunk"))
        if chunk is None:
            return [CallerAudio(payload)]
        return [CallerAudio(p) for p in self._order(chunk, payload)]

    def _order(self, chunk: int, payload: bytes) -> list[bytes]:
        if self._next_chunk is None:
            self._next_chunk = chunk
        out: list[bytes] = []
        if abs(chunk - self._next_chunk) > CHUNK_JUMP_LIMIT:
            consecutive = self._stray_last is not None and chunk == self._stray_last + 1
            self._stray_run = self._stray_run + 1 if consecutive else 1
            self._stray_last = chunk
            if self._stray_run < RESYNC_AFTER:
                self.stray += 1
                return []
            # The stream was renumbered: what is held plays first, then the stream goes on from here.
            out = [p for _, p in sorted(self._held.items())]
            self._held.clear()
            self._next_chunk = chunk
        self._stray_last = None
        self._stray_run = 0
        if chunk < self._next_chunk or chunk in self._held:
            self.late += 1
            return out
        if chunk > self._next_chunk:
            self.reordered += 1
        self._held[chunk] = payload
        while True:
            if self._next_chunk in self._held:
                out.append(self._held.pop(self._next_chunk))
                self._next_chunk += 1
            elif len(self._held) > self.reorder_window:
                lowest = min(self._held)
                self.lost += lowest - self._next_chunk  # give up on the gap: those frames are lost
                self._next_chunk = lowest
            else:
                return out


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise TelnyxProtocolError(f"Telnyx {_text(msg.get('event'))[:40]} frame has no `{key}` object")
    return value


def _int(value: Any) -> int | None:
    """A chunk number: an int, or a string of at most 18 ASCII digits (int() refuses > 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= 18 and value.isascii() and value.isdigit():
        return int(value)
    return None


# ---------------------------------------------------------------- media websocket (us → Telnyx)


def encode_media(ulaw: bytes) -> str:
    """A `media` frame carrying μ-law audio (RTP payload, no header) toward the caller."""
    return json.dumps({"event": "media", "media": {"payload": base64.b64encode(ulaw).decode()}})


def encode_mark(name: str) -> str:
    """A `mark` frame: Telnyx echoes it once the audio sent before it has played (or was cleared)."""
    return json.dumps({"event": "mark", "mark": {"name": name}})


def encode_clear() -> str:
    """A `clear` frame: drop queued audio now (barge-in); Telnyx returns the queued marks."""
    return json.dumps({"event": "clear"})


class TelnyxCodec:
    """Telnyx media streaming as a `media_codec.MediaCodec`: a MediaDecoder in, encoded frames out."""

    def __init__(self, reorder_window: int = 3) -> None:
        self.decoder = MediaDecoder(reorder_window)

    def receive(self, frame: str | bytes) -> list[MediaEvent | Notice]:
        """Decoded events; a Telnyx `error` frame (about what we sent) becomes a Notice: the call goes on."""
        out: list[MediaEvent | Notice] = []
        for item in self.decoder.feed(frame):
            if isinstance(item, MediaStreamError):
                fields = {
                    "code": item.code,
                    "title": item.title,
                    "detail": item.detail,
                    "stream_id": self.decoder.stream_id,
                }
                out.append(Notice("telnyx media stream error", fields))
            else:
                out.append(item)
        return out

    def media(self, ulaw: bytes) -> str:
        return encode_media(ulaw)

    def mark(self, name: str) -> str:
        return encode_mark(name)

    def clear(self) -> str:
        return encode_clear()
