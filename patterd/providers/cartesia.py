"""`stt.cartesia` and `tts.cartesia`: Cartesia's streaming STT (ink-whisper) and TTS (sonic) websockets, 8 kHz μ-law.

STT: one websocket per call's stream, the carrier's μ-law sent as is (`encoding=pcm_mulaw`,
`sample_rate=8000`), silence included (ink-whisper's endpointing counts it; Cartesia has no keepalive
message: audio is the keepalive). `flush()` sends `finalize` and returns once `flush_done` came; the
turn's text is its `is_final` transcripts joined verbatim (from 2026-03-01 each is a delta that
carries its own leading space). A final ink-whisper sends by itself (after `max_silence_duration_secs`
of silence) ends the turn when `endpointing` is on. Closing sends `close` and waits for `done`.

TTS: one websocket per provider, opened when it is built (pre-opened: no handshake in the first
turn) and re-opened when Cartesia closed it (idle sockets close after 5 minutes; we replace one
idle for `idle_reconnect_secs` before that). Every synthesis is a context (`context_id`) multiplexed
on it; closing a synthesis early (barge-in) sends `cancel` for its id, and chunks still in flight for
it are dropped; the next sentence gets a new id. `speak_stream()` feeds text pieces into one context
with `continue: true` (Cartesia joins them verbatim) for callers that stream LLM text.

Wire format and sources: `patterd.protocols.cartesia`. Billing: STT per audio second, TTS per
character (prices in `patterd.cost`, provider name `cartesia`).
"""

from __future__ import annotations

from typing import Any

from patterd.providers.cartesia_common import NAME, CartesiaOptions
from patterd.providers.cartesia_stt import CartesiaSTT, CartesiaSTTStream, STTOptions, build_stt
from patterd.providers.cartesia_tts import DEFAULT_VOICE, CartesiaTTS, TTSOptions, build_tts
from patterd.providers.spec import Capabilities, ProviderSpec

# The providers live in cartesia_stt and cartesia_tts; importers of this module still find them here.
__all__ = [
    "DEFAULT_VOICE",
    "STT_SPEC",
    "TTS_SPEC",
    "CartesiaOptions",
    "CartesiaSTT",
    "CartesiaSTTStream",
    "CartesiaTTS",
    "STTOptions",
    "TTSOptions",
    "build_stt",
    "build_tts",
    "check",
]


async def check(provider: Any) -> None:
    """`patterd check --probe`: an authenticated GET (voices)."""
    await provider.check()


STT_SPEC = ProviderSpec(
    kind="stt",
    name=NAME,
    options=STTOptions,
    build=build_stt,
    summary="Cartesia streaming STT (ink-whisper websocket, μ-law 8 kHz, finalize on flush)",
    check=check,
    capabilities=Capabilities(streaming=True, interim_results=True, needs_network=True, sample_rates=(8000,)),
)

TTS_SPEC = ProviderSpec(
    kind="tts",
    name=NAME,
    options=TTSOptions,
    build=build_tts,
    summary="Cartesia streaming TTS (sonic websocket, one pre-opened socket, a context per sentence, cancel)",
    check=check,
    capabilities=Capabilities(streaming=True, needs_network=True, sample_rates=(8000,)),
)
