"""What bench/load.py's pieces share: the scenario's constants and a percentile."""

from __future__ import annotations

import os

from patterd.protocols.audio import FRAME_BYTES, rms_pcm16, ulaw_to_pcm16
from tests.fakes.twilio import spoken_ulaw

PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
SILENCE_MS = 500  # the engine's end-of-turn silence (DEFAULT_TURN_DETECTION)
VAD_RMS = 300
CALLER_TEXT = "Hello, I would like to know my account balance please."
REPLY_TEXT = "Sure, your balance is twelve dollars."
GREETING_SECS = 4.0  # a caller lets the greeting play this long before it speaks
SETTLE_SECS = 6.0  # from the last caller's dial to the measured window
# Read once, before the first level narrows this process to the fake cores: read again at the
# second level, it would put the daemon on the fakes' core (which made every level after the
# first look throttled in earlier runs).
CORES = sorted(os.sched_getaffinity(0))
FRAME_SECS = 0.02
TICK_GROUPS = 10  # callers are spread over 10 send slots per 20 ms tick
SATURATED_PCT = 90.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def trimmed_speech(text: str) -> bytes:
    """espeak-ng speech with trailing quiet frames cut, so 'speech end' is the engine VAD's speech end."""
    ulaw = spoken_ulaw(text)
    ulaw = ulaw[: len(ulaw) - len(ulaw) % FRAME_BYTES]
    end = len(ulaw)
    while end > 0 and rms_pcm16(ulaw_to_pcm16(ulaw[end - FRAME_BYTES : end])) <= VAD_RMS:
        end -= FRAME_BYTES
    return ulaw[:end]
