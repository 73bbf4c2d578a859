"""The fake controllers each suite scripts its provider's fake with, by kind (methods beyond FakeControl)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from patterd.testing.harness import FakeControl


class STTControl(FakeControl, Protocol):
    """Scripts a fake speech-to-text server.

    - ``queue_transcript(text, interim=())``: the next utterance the fake hears is recognized as
      `text`, with these interim hypotheses first;
    - ``audio_received()``: caller audio bytes the fake has been sent so far (any encoding).

    Setup features: ``interim`` (interim results come before the final), ``endpointing`` (the
    vendor ends the utterance itself on silence: a final with end_of_utterance without flush),
    ``streaming_input`` (audio reaches the vendor while the caller speaks, not at flush).
    """

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        """The next utterance's recognized text."""
        ...


class TTSControl(FakeControl, Protocol):
    """Scripts a fake text-to-speech server.

    - ``texts_received()``: every text the fake was asked to speak, in order;
    - ``streams_completed()``: syntheses the fake streamed to the end (a cancelled one does not count).
    """

    def texts_received(self) -> list[str]:
        """Texts the fake was asked to speak."""
        ...


class LLMControl(FakeControl, Protocol):
    """Scripts a fake chat model: ``queue_reply(text)`` is the next completion's text, streamed in pieces."""

    def queue_reply(self, text: str) -> None:
        """The next completion's reply text."""
        ...


class EngineControl(FakeControl, Protocol):
    """Scripts a fake speech-to-speech engine: ``queue_reply(text)`` is what it says at its next response.

    - ``queue_transcript(text)``: the next caller turn the engine hears is transcribed as `text`.
    """

    def queue_reply(self, text: str) -> None:
        """The engine's next spoken reply."""
        ...
