"""The shape of a carrier's sans-I/O media codec, which `providers/media_leg.MediaLeg` runs on a websocket.

A codec keeps only the wire format of one carrier's media stream:

    receive(frame) -> Sequence[MediaEvent | Notice]
        the events in one incoming frame (often none or one: starts, media, marks played, DTMF, stop);
        raises `protocols.frames.BadFrame` (with its `reason`) for a frame that breaks the wire format;
        a `Notice` is something the peer reported that deserves a (rate-limited) warning, no event.
    media(ulaw) -> str | bytes          one outgoing message of agent audio (μ-law 8 kHz, one frame)
    mark(name) -> str | bytes | None    "tell me when this is played"; None: the wire has no marks
                                        (the leg then emulates them on its clock at 8 kHz real time)
    clear() -> str | bytes | None       "drop what you buffered"; None: the wire has no clear

A text message is sent as a websocket text frame, bytes as a binary frame. Codecs hold per-stream
state (stream ids, outstanding marks, reordering) and are built per call by the carrier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from patterd.protocols.events import MediaEvent


@dataclass(frozen=True)
class Notice:
    """Something the peer reported that is worth a (rate-limited) warning but is no media event."""

    event: str
    fields: Mapping[str, object] = field(default_factory=dict)


class MediaCodec(Protocol):
    """A carrier's media wire format, sans I/O (see the module docstring)."""

    def receive(self, frame: str | bytes) -> Sequence[MediaEvent | Notice]:
        """The events in one frame; raises BadFrame for a frame that breaks the wire format."""
        ...

    def media(self, ulaw: bytes) -> str | bytes:
        """One outgoing message of agent audio."""
        ...

    def mark(self, name: str) -> str | bytes | None:
        """A mark message, or None when the wire has no marks (the leg emulates them)."""
        ...

    def clear(self) -> str | bytes | None:
        """A clear message, or None when the wire has no clear."""
        ...
