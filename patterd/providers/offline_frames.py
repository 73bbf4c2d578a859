"""Caller audio cut into VAD frames for the `stt.offline` engines, with the pre-roll an utterance starts from.

Both engines (pocketsphinx, whisper) decode 8 kHz μ-law to PCM16, cut it into 30 ms frames that
pocketsphinx's `Vad` classifies, and open an utterance on the first speech frame with the 300 ms
before it (the VAD decides late; a word's onset is in the pre-roll). What they do with the frames
of an open utterance differs; the cutting and its bookkeeping live here.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pocketsphinx

from patterd.protocols.audio import ulaw_to_pcm16

PREROLL_MS = 300


class SpeechFrames:
    """One stream's VAD framing: frames with their speech decision, the pre-roll, where the stream stands."""

    def __init__(self, vad_aggressiveness: int) -> None:
        self._vad = pocketsphinx.Vad(vad_aggressiveness, 8000, 0.03)
        self.frame_bytes: int = self._vad.frame_bytes
        self.frame_ms = round(1000 * self.frame_bytes / 2 / 8000)
        self._preroll: collections.deque[bytes] = collections.deque(
            maxlen=max(1, PREROLL_MS // self.frame_ms)
        )
        self.pending = b""  # PCM16 short of a whole frame, waiting for the next audio
        self._received = 0  # bytes of 8 kHz PCM16 taken in: 16 per ms of the stream's audio

    def push(self, ulaw: bytes) -> Iterator[tuple[bytes, bool]]:
        """The whole frames this audio completes, each with the VAD's speech decision."""
        pcm = ulaw_to_pcm16(ulaw)
        self._received += len(pcm)
        self.pending += pcm
        while len(self.pending) >= self.frame_bytes:
            frame, self.pending = self.pending[: self.frame_bytes], self.pending[self.frame_bytes :]
            yield frame, bool(self._vad.is_speech(frame))

    def onset(self, frame: bytes, speech: bool) -> bytes | None:
        """Outside an utterance: keep `frame` in the pre-roll; on speech, the pre-roll (emptied) to open one with."""
        self._preroll.append(frame)
        if not speech:
            return None
        opening = b"".join(self._preroll)
        self._preroll.clear()
        return opening

    def take_pending(self) -> bytes:
        """The partial frame, handed over when an utterance is finalized on request (flush)."""
        pending, self.pending = self.pending, b""
        return pending

    @property
    def position_ms(self) -> float:
        """How far into the stream's audio the frames cut so far reach (the pipeline times turn ends by it)."""
        return (self._received - len(self.pending)) / 16
