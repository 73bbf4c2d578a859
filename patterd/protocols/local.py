"""The local softphone's media protocol: Twilio Media Streams' JSON dialect, spoken by a browser.

Browser → daemon: `start` {start: {format: "mulaw/8000"}}, `media` {media: {payload: base64 μ-law,
chunk: n}} (chunk optional: 1, 2, 3 … per media frame of the stream), `dtmf` {dtmf: {digit}}, `mark`
{mark: {name}} (echo of a mark we sent, once played), `stop`, and the receiver report `heard`
{heard: {turn, ms}}: the first agent `media` after `turn` arrived `ms` after the page sent that chunk.
Daemon → browser: `media` {media: {payload}}, `mark` {mark: {name}}, `clear`, `transcript`
{role, text} lines so the page can show the conversation beside the call (with `partial: true`: the
agent's words so far, as their audio starts playing; the final line of the reply replaces them), and
`turn` {turn: {id, chunk}} right before a turn's first agent `media`: the caller chunk the daemon
counted as the turn's last voiced frame (docs/operations.md "Turn latency").
"""

from __future__ import annotations

import binascii
import collections
import json
import math
from typing import Any

from patterd.protocols import frames
from patterd.protocols.events import (
    CallerAudio,
    CallerDtmf,
    CallerHeard,
    MarkPlayed,
    MediaEvent,
    StreamStarted,
    StreamStopped,
)


class LocalProtocolError(frames.BadFrame):
    """A softphone frame that does not follow the protocol (`reason`: see protocols.frames)."""


CHUNKS_KEPT = 1500  # 30 s of caller chunks: a turn's last voiced frame is announced ~1 s after it came
TURNS_KEPT = 16  # announced turns that may still be reported, and reported turns remembered
# A report may undercut the daemon's own latency only by rounding (both are 0.1 ms): the caller cannot
# hear an answer before the daemon sent it. Beyond MAX_NETWORK_MS the two trips are not a measurement.
UNDERCUT_MS = 0.2
MAX_NETWORK_MS = 10_000.0


def parse_message(text: str | bytes) -> MediaEvent | None:
    """One frame from the browser as a media event (None for frames we ignore, such as `connected`).

    Raises LocalProtocolError (and nothing else) for a frame it cannot take.
    """
    try:
        return parse_object(frames.load_object(text, "softphone"))
    except frames.BadFrame as exc:
        raise LocalProtocolError(str(exc), exc.reason) from None


def parse_object(msg: dict[str, object]) -> MediaEvent | None:
    """The media event of one parsed frame (see parse_message); raises BadFrame."""
    event = msg.get("event")
    if event == "media":
        return CallerAudio(frames.b64_audio(_member(msg, "media", "payload"), "softphone"))
    if event == "dtmf":
        return CallerDtmf(frames.dtmf_digit(_member(msg, "dtmf", "digit"), "softphone"))
    if event == "mark":
        name = _member(msg, "mark", "name")
        if not isinstance(name, str):
            raise frames.BadFrame(f"softphone mark name is {name!r:.40}, expected a string")
        return MarkPlayed(name)
    if event == "start":
        sid = msg.get("streamSid", "local")
        return StreamStarted(stream_id=sid if isinstance(sid, str) else "local")
    if event == "stop":
        return StreamStopped("caller hung up")
    if event == "connected":
        return None
    if event == "heard":
        return CallerHeard(*heard_report(msg))
    raise LocalProtocolError(f"unknown softphone event {event!r:.60}", "unknown_event")


def _member(msg: dict[str, object], key: str, member: str) -> object:
    """msg[key][member]; BadFrame `bad_shape` when msg[key] is not an object or lacks it."""
    inner = msg.get(key)
    if not isinstance(inner, dict) or member not in inner:
        raise frames.BadFrame(f"softphone {key!r} frame without {key}.{member}: {inner!r:.60}")
    return inner[member]


def _dump(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def media_message(ulaw: bytes) -> str:
    """Agent audio for the browser."""
    return _dump({"event": "media", "media": {"payload": binascii.b2a_base64(ulaw, newline=False).decode()}})


def mark_message(name: str) -> str:
    """Ask the browser to echo `name` when the audio before it has played."""
    return _dump({"event": "mark", "mark": {"name": name}})


def clear_message() -> str:
    """Drop buffered agent audio (barge-in)."""
    return _dump({"event": "clear"})


def turn_message(turn: int, chunk: int) -> str:
    """Right before a turn's first agent audio: `chunk` is the caller frame counted as its last voiced one."""
    return _dump({"event": "turn", "turn": {"id": turn, "chunk": chunk}})


def heard_report(msg: dict[str, object]) -> tuple[int, float]:
    """(turn, ms) of a `heard` frame; LocalProtocolError `bad_shape` / `bad_report` for anything else."""
    turn = _member(msg, "heard", "turn")
    ms = _member(msg, "heard", "ms")
    if not isinstance(turn, int) or isinstance(turn, bool):
        raise LocalProtocolError(f"softphone heard.turn is {turn!r:.40}, expected an integer", "bad_shape")
    if not isinstance(ms, int | float) or isinstance(ms, bool) or not math.isfinite(ms):
        raise LocalProtocolError(f"softphone heard.ms is {ms!r:.40}, expected a number of ms", "bad_report")
    return turn, float(ms)


def transcript_message(role: str, text: str, *, partial: bool = False) -> str:
    """A transcript line for the page; `partial`: the agent's words so far, replaced by the final line."""
    msg: dict[str, Any] = {"event": "transcript", "role": role, "text": text}
    if partial:
        msg["partial"] = True
    return _dump(msg)


class SoftphoneCodec:
    """The browser phone's dialect as a `media_codec.MediaCodec`: one `start` per stream, like a carrier's.

    It also keeps the receiver-report state: the chunk number of recent caller frames (by their count
    in the stream, which is how the call session names them), the turns announced with `turn_message`
    and their latency, and which were reported; a report that does not fit is a BadFrame like any other.
    """

    def __init__(self) -> None:
        self.started = False
        self.frames = 0  # caller media frames received
        self._chunks: collections.deque[tuple[int, int]] = collections.deque(maxlen=CHUNKS_KEPT)
        self._announced: collections.OrderedDict[int, float] = collections.OrderedDict()  # turn → latency
        self._reported: collections.deque[int] = collections.deque(maxlen=TURNS_KEPT)

    def receive(self, frame: str | bytes) -> tuple[MediaEvent, ...]:
        try:
            msg = frames.load_object(frame, "softphone")
            event = parse_object(msg)
        except frames.BadFrame as exc:
            raise LocalProtocolError(str(exc), exc.reason) from None
        if event is None:
            return ()
        kind = type(event)
        if kind is CallerAudio:
            self.frames += 1
            chunk = _chunk(msg)
            if chunk is not None:
                self._chunks.append((self.frames, chunk))
            return (event,)
        if kind is CallerHeard:
            return (self._checked(event),)  # type: ignore[arg-type]
        if isinstance(event, StreamStarted):
            if self.started:
                raise LocalProtocolError("softphone 'start' on a stream that has started", "duplicate_start")
            self.started = True
        return (event,)

    def media(self, ulaw: bytes) -> str:
        return media_message(ulaw)

    def mark(self, name: str) -> str:
        return mark_message(name)

    def clear(self) -> str:
        return clear_message()

    def chunk_of(self, frame: int) -> int | None:
        """The chunk number the page gave caller frame number `frame` (None: not numbered, or too old)."""
        chunks = self._chunks
        if not chunks:
            return None
        index = len(chunks) - 1 - (chunks[-1][0] - frame)  # frames are contiguous when every one is numbered
        if 0 <= index < len(chunks) and chunks[index][0] == frame:
            return chunks[index][1]
        return next((c for n, c in reversed(chunks) if n == frame), None)

    def turn(self, turn: int, frame: int, latency_ms: float) -> str | None:
        """The `turn` message announcing `turn` (its last voiced frame `frame`, its latency), or None when
        that frame had no chunk number (a page that does not report)."""
        chunk = self.chunk_of(frame)
        if chunk is None:
            return None
        self._announced[turn] = latency_ms
        while len(self._announced) > TURNS_KEPT:
            self._announced.popitem(last=False)
        return turn_message(turn, chunk)

    def _checked(self, report: CallerHeard) -> CallerHeard:
        """A `heard` report, validated against what was announced: each announced turn once, in range."""
        turn, ms = report.turn, report.heard_ms
        latency = self._announced.pop(turn, None)
        if latency is None:
            why = "reported already" if turn in self._reported else "never announced"
            raise LocalProtocolError(f"softphone report for turn {turn}: {why}", "unexpected_report")
        self._reported.append(turn)  # once per turn, whether this report is usable or not
        if not latency - UNDERCUT_MS <= ms <= latency + MAX_NETWORK_MS:
            raise LocalProtocolError(
                f"softphone report for turn {turn}: heard {ms:.1f} ms of a {latency:.1f} ms turn",
                "bad_report",
            )
        return report


def _chunk(msg: dict[str, object]) -> int | None:
    """media.chunk of a media frame (None when absent or not a positive integer: the audio still
    counts, the frame just cannot be named in a report)."""
    media = msg.get("media")
    chunk = media.get("chunk") if isinstance(media, dict) else None
    return chunk if isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0 else None
