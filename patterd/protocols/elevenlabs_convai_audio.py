"""ElevenLabs Agents audio: the caller's μ-law 8 kHz to the agent's input format, its output format back."""

from __future__ import annotations

from patterd.protocols import elevenlabs_convai as ev
from patterd.protocols.audio import Resampler, pcm16_to_ulaw, ulaw_to_pcm16


class Transcoder:
    """Caller μ-law 8 kHz → the agent's input format, and its output format → μ-law 8 kHz."""

    def __init__(self, input_format: str, output_format: str) -> None:
        self.in_rate = ev.sample_rate(input_format)
        self.out_rate = ev.sample_rate(output_format)
        self.in_ulaw = input_format == ev.ULAW_8000
        self.out_ulaw = output_format == ev.ULAW_8000
        self._up = Resampler(8000, self.in_rate) if not self.in_ulaw and self.in_rate != 8000 else None
        self._down: Resampler | None = None
        self._odd = b""  # a PCM byte split across chunks
        self.reset()

    def reset(self) -> None:
        """Forget the output filter's state (after an interruption, audio restarts elsewhere)."""
        self._odd = b""
        if not self.out_ulaw and self.out_rate != 8000:
            self._down = Resampler(self.out_rate, 8000)

    def up(self, ulaw: bytes) -> bytes:
        if self.in_ulaw:
            return ulaw
        pcm = ulaw_to_pcm16(ulaw)
        return self._up.process(pcm) if self._up is not None else pcm

    def down(self, audio: bytes) -> bytes:
        if self.out_ulaw:
            return audio
        pcm = self._odd + audio
        cut = len(pcm) - len(pcm) % 2
        pcm, self._odd = pcm[:cut], pcm[cut:]
        if self._down is not None:
            pcm = self._down.process(pcm)
        return pcm16_to_ulaw(pcm)
