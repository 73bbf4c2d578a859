"""Caller audio for the suites: a voiced stand-in for speech and silence, 8 kHz μ-law in 20 ms frames."""

from __future__ import annotations

import math
import struct

from patterd.protocols.audio import pcm16_to_ulaw, silence_ulaw

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law


def voiced_ulaw(ms: int, freq: float = 220.0, level: float = 0.4) -> bytes:
    """A loud vowel-like tone (fundamental + harmonics) that any energy VAD takes for speech."""
    n = 8 * ms
    samples = (
        level
        * 32767
        * (
            0.6 * math.sin(2 * math.pi * freq * t / 8000)
            + 0.3 * math.sin(4 * math.pi * freq * t / 8000)
            + 0.1 * math.sin(6 * math.pi * freq * t / 8000)
        )
        for t in range(n)
    )
    return pcm16_to_ulaw(struct.pack(f"<{n}h", *(int(s) for s in samples)))


def silent_ulaw(ms: int) -> bytes:
    """Digital silence."""
    return silence_ulaw(ms)


def frames(audio: bytes) -> list[bytes]:
    """`audio` cut into 20 ms frames (the last one may be short)."""
    return [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
