"""Server-Sent Events framing, sans-I/O: feed response bytes, get (event, data) pairs as they complete.

Followed: the HTML standard's event-stream interpretation (lines end in LF, CRLF or CR; `data:`
lines join with LF; a blank line dispatches; `:` starts a comment; one space after the colon is
dropped; `event:` names the event). The payload is left to the caller (JSON for OpenAI).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_EVENT_BYTES = 1 << 20  # one event larger than this is not a vendor's: refuse instead of buffering forever


class SSEError(ValueError):
    """The stream cannot be SSE: undecodable text or an event over MAX_EVENT_BYTES."""


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event: its `event:` name ("" when none) and joined `data:` lines."""

    event: str
    data: str


class SSEDecoder:
    """Incremental decoder: `feed(bytes)` returns the events those bytes complete; `close()` at end of body."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._size = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Events completed by `chunk`; a partial line waits for the next feed."""
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                break
            raw, self._buffer = self._buffer[:cut], self._buffer[cut + 1 :]
            events.extend(self._line(raw.rstrip(b"\r")))
        if len(self._buffer) + self._size > MAX_EVENT_BYTES:
            raise SSEError(f"an SSE event exceeds {MAX_EVENT_BYTES} bytes")
        return events

    def close(self) -> list[SSEEvent]:
        """The body ended: a last unterminated line, then any event not yet dispatched."""
        events: list[SSEEvent] = []
        if self._buffer:
            events.extend(self._line(self._buffer.rstrip(b"\r")))
            self._buffer = b""
        events.extend(self._dispatch())
        return events

    def _line(self, raw: bytes) -> list[SSEEvent]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SSEError(f"an SSE line is not UTF-8: {raw[:80]!r}") from exc
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # comment: keep-alive
            return []
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value)
        elif name == "event":
            self._event = value
        return []  # id:, retry: carry nothing we use

    def _dispatch(self) -> list[SSEEvent]:
        event, self._event = self._event, ""
        if not self._data:
            return []
        data = "\n".join(self._data)
        self._data = []
        self._size = 0
        return [SSEEvent(event, data)]
