"""The STT suite: streamed audio in, interim then final, endpointing, flush, cancel, errors, sockets, check."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

from patterd.errors import ProviderError
from patterd.providers.kinds import STT, STTStream, Transcript
from patterd.testing import common
from patterd.testing.audio import frames, silent_ulaw, voiced_ulaw
from patterd.testing.harness import Setup, Suite, control_method, skip, wait_until
from patterd.testing.kinds import STTControl

UTTERANCE = "book a table for two at eight"
INTERIM = ("book a", "book a table for")
SPEECH_MS = 1200
TRAILING_SILENCE_MS = 1500  # longer than any endpointing setting the suite's providers use


def words(text: str) -> list[str]:
    """Lower-case words without punctuation (vendors add their own punctuation and casing)."""
    return re.findall(r"[a-z0-9']+", text.lower())


class Listener:
    """Reads an STTStream in the background; what it heard, and the error that ended it, if any."""

    def __init__(self, stream: STTStream) -> None:
        self.stream = stream
        self.transcripts: list[Transcript] = []
        self.error: BaseException | None = None
        self.ended = False
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for transcript in self.stream:
                self.transcripts.append(transcript)
        except ProviderError as exc:
            self.error = exc
        finally:
            self.ended = True

    def finals(self) -> list[Transcript]:
        return [t for t in self.transcripts if t.is_final]

    def final_words(self) -> list[str]:
        return words(" ".join(t.text for t in self.finals()))

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        def done() -> bool:
            if self.error is not None:
                raise self.error
            return predicate() or self.ended

        await wait_until(done, timeout, what)
        if self.error is not None:
            raise self.error
        assert predicate(), f"the stream ended before {what}; heard {self.transcripts}"

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def push(stream: STTStream, audio: bytes, pace_ms: float = 0.0) -> None:
    """Push audio as the carrier would, frame by frame (paced at `pace_ms` per frame; 0: at once, yielding)."""
    for frame in frames(audio):
        stream.push_audio(frame)
        await asyncio.sleep(pace_ms / 1000)


class STTSuite(Suite[STT, STTControl]):
    """Behaviour every `stt.*` provider owes the pipeline.

    Setup features: ``interim``, ``endpointing``, ``streaming_input`` (see STTControl); ``paced``
    pushes caller audio in real time (for recognizers that need it), else as fast as the loop allows.
    """

    kind = "stt"

    def _speech(self, setup: Setup[STT, STTControl], text: str) -> bytes:
        speech_for = getattr(setup.control, "speech_for", None)  # real speech for real recognizers
        audio = speech_for(text) if callable(speech_for) else voiced_ulaw(SPEECH_MS)
        assert isinstance(audio, bytes)
        return audio

    def _queue(
        self, setup: Setup[STT, STTControl], text: str = UTTERANCE, interim: tuple[str, ...] = ()
    ) -> None:
        setup.control.queue_transcript(text, interim)

    def _pace(self, setup: Setup[STT, STTControl]) -> float:
        return 20.0 if "paced" in setup.features else 0.0

    async def _utterance(self, setup: Setup[STT, STTControl], stt: STT) -> list[Transcript]:
        """One utterance through a fresh stream, ended by flush (or by the vendor's endpointing)."""
        self._queue(setup)
        async with stt.stream() as stream:
            listener = Listener(stream)
            try:
                await push(stream, self._speech(setup, UTTERANCE) + silent_ulaw(300), self._pace(setup))
                await stream.flush()
                await listener.until(lambda: bool(listener.finals()), self.timeout, "a final transcript")
            finally:
                await listener.close()
        return listener.transcripts

    async def case_interim_then_final(self, setup: Setup[STT, STTControl]) -> None:
        self._queue(setup, UTTERANCE, INTERIM)
        received = getattr(setup.control, "audio_received", None)
        async with setup.build() as stt, stt.stream() as stream:
            listener = Listener(stream)
            try:
                await push(stream, self._speech(setup, UTTERANCE), self._pace(setup))
                if "streaming_input" in setup.features and callable(received):
                    # Audio reaches the vendor while the caller is still speaking, not at the end of the turn.
                    await wait_until(lambda: received() > 0, self.timeout, "caller audio at the fake")
                if "interim" in setup.features:
                    await listener.until(
                        lambda: any(not t.is_final and t.text.strip() for t in listener.transcripts),
                        self.timeout,
                        "an interim transcript while speaking",
                    )
                await push(stream, silent_ulaw(300), self._pace(setup))
                await stream.flush()
                await listener.until(lambda: bool(listener.finals()), self.timeout, "a final transcript")
            finally:
                await listener.close()
        approximate = "approximate" in setup.features
        heard = listener.final_words()
        if approximate:
            assert heard, "the final transcript is empty"
        else:
            assert heard == words(UTTERANCE), f"final words {heard} != {words(UTTERANCE)}"
        if "interim" in setup.features:
            first_final = listener.transcripts.index(listener.finals()[0])
            assert any(not t.is_final for t in listener.transcripts[:first_final]), (
                "no interim before the final"
            )
        assert all(t.text.strip() for t in listener.finals()), "an empty final transcript was emitted"

    async def case_endpointing_ends_the_utterance(self, setup: Setup[STT, STTControl]) -> None:
        if "endpointing" not in setup.features:
            skip("the provider does not end utterances itself (the pipeline's VAD does, then flush)")
        self._queue(setup)
        async with setup.build() as stt, stt.stream() as stream:
            listener = Listener(stream)
            try:
                await push(stream, self._speech(setup, UTTERANCE), self._pace(setup))
                # Silence only, no flush: the vendor's endpointing must close the turn by itself.
                silence = asyncio.create_task(push(stream, silent_ulaw(TRAILING_SILENCE_MS), 20.0))
                try:
                    await listener.until(
                        lambda: any(t.end_of_utterance for t in listener.transcripts),
                        self.timeout,
                        "a transcript with end_of_utterance after silence",
                    )
                finally:
                    silence.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await silence
            finally:
                await listener.close()
        eou = next(t for t in listener.transcripts if t.end_of_utterance)
        assert eou.is_final, "end_of_utterance must come on a final transcript"
        assert listener.final_words(), "the utterance ended without words"

    async def case_flush_finalizes_and_never_emits_an_empty_final(
        self, setup: Setup[STT, STTControl]
    ) -> None:
        async with setup.build() as stt:
            async with stt.stream() as stream:
                listener = Listener(stream)
                try:
                    await push(stream, silent_ulaw(400), self._pace(setup))
                    await stream.flush()  # nothing was said: no final at all
                    self._queue(setup)
                    await push(stream, self._speech(setup, UTTERANCE), self._pace(setup))
                    await stream.flush()
                    await listener.until(lambda: bool(listener.finals()), self.timeout, "the flushed final")
                finally:
                    await listener.close()
        assert all(t.text.strip() for t in listener.finals()), f"an empty final: {listener.finals()}"
        assert listener.final_words(), "flush produced no words"

    async def case_cancel_mid_utterance_closes_the_stream(self, setup: Setup[STT, STTControl]) -> None:
        active = control_method(setup.control, "active_streams")
        self._queue(setup)
        async with setup.build() as stt:
            async with stt.stream() as stream:
                listener = Listener(stream)
                await push(stream, self._speech(setup, UTTERANCE)[:4000], self._pace(setup))
                await listener.close()
            # The call hung up (or the stream was replaced) mid-utterance: the vendor stream goes at once.
            await wait_until(lambda: active() == 0, self.timeout, "the fake's stream to be closed")
            await self._utterance(setup, stt)  # the provider still works

    async def case_auth_errors_are_fatal(self, setup: Setup[STT, STTControl]) -> None:
        await common.expect_fatal(setup, lambda stt: self._utterance(setup, stt))

    async def case_rate_limit_and_server_errors_are_retryable(self, setup: Setup[STT, STTControl]) -> None:
        await common.expect_retryable(setup, lambda stt: self._utterance(setup, stt))

    async def case_stalled_vendor_times_out(self, setup: Setup[STT, STTControl]) -> None:
        await common.expect_timeout(setup, lambda stt: self._utterance(setup, stt), self.timeout)

    async def case_dropped_connection_is_retryable(self, setup: Setup[STT, STTControl]) -> None:
        # A cut stream raises a retryable error (or ends, which the pipeline treats as one): never a hang.
        await common.expect_dropped_is_retryable(setup, lambda stt: self._utterance(setup, stt))

    async def case_sockets_closed(self, setup: Setup[STT, STTControl]) -> None:
        async def use(stt: Any) -> None:
            await self._utterance(setup, stt)
            await self._utterance(setup, stt)

        await common.expect_closed(setup, use, self.timeout)

    async def case_usage_priced(self, setup: Setup[STT, STTControl]) -> None:
        common.expect_priced(setup, "audio")

    async def case_check_probe(self, setup: Setup[STT, STTControl]) -> None:
        await common.expect_check(setup)
