"""The TTS suite: streamed μ-law audio, cancel mid-stream on barge-in, error mapping, sockets, check, pricing."""

from __future__ import annotations

import time
from typing import Any, cast

from patterd.providers.kinds import TTS
from patterd.testing import common
from patterd.testing.harness import Setup, Suite, wait_until
from patterd.testing.kinds import TTSControl

SHORT = "Thanks for calling. How can I help you today?"
# Long enough that any vendor streams it in several chunks and is still sending when the caller barges in.
LONG = " ".join(
    [
        "Our opening hours are nine in the morning to five in the afternoon, Monday to Friday,",
        "and ten to four on Saturdays; on public holidays the office stays closed all day.",
    ]
    * 6
)


async def speak(tts: TTS, text: str = SHORT) -> list[bytes]:
    """Every chunk of one synthesis."""
    chunks = [chunk async for chunk in tts.synthesize(text)]
    assert all(isinstance(c, bytes) for c in chunks), "TTS chunks must be bytes (8 kHz μ-law)"
    assert sum(len(c) for c in chunks) > 0, f"no audio for {text!r}"
    return chunks


class TTSSuite(Suite[TTS, TTSControl]):
    """Behaviour every `tts.*` provider owes the pipeline (8 kHz μ-law out, cancel by closing the generator)."""

    kind = "tts"

    async def case_streams_audio(self, setup: Setup[TTS, TTSControl]) -> None:
        async with setup.build() as tts:
            chunks = await speak(tts, LONG)
        total = sum(len(c) for c in chunks)
        assert len(chunks) >= 2, (
            f"{len(LONG)} characters came back in {len(chunks)} chunk(s): audio must stream"
        )
        # 8 kHz μ-law is one byte per sample: speech of this length lasts seconds, not milliseconds
        # (a provider returning 16-bit or 24 kHz audio unconverted would be 2-6x too long or garbled).
        seconds = total / 8000
        assert 3.0 < seconds < 120.0, f"{total} bytes = {seconds:.1f} s of 8 kHz μ-law for {len(LONG)} chars"
        texts = getattr(setup.control, "texts_received", None)
        if callable(texts):
            sent = " ".join(cast(list[str], texts()))
            assert "opening hours" in sent, f"the fake was asked to speak {sent!r}"
        common.expect_priced(setup, "characters")

    async def case_cancel_mid_stream(self, setup: Setup[TTS, TTSControl]) -> None:
        async with setup.build() as tts:
            completed = getattr(setup.control, "streams_completed", None)
            done_before = completed() if callable(completed) else 0
            stream = tts.synthesize(LONG)
            first = await anext(stream)
            assert first, "the first chunk is empty"
            started = time.monotonic()
            await stream.aclose()  # type: ignore[attr-defined]  # barge-in: the pipeline closes the generator
            assert time.monotonic() - started < 2.0, "closing a synthesis mid-stream took over 2 s"
            try:
                await anext(stream)
            except StopAsyncIteration:
                pass
            else:
                raise AssertionError("audio came after the stream was closed")
            active = getattr(setup.control, "active_streams", None)
            if callable(active):
                await wait_until(
                    lambda: active() == 0, self.timeout, "the fake to see the synthesis cancelled"
                )
            if callable(completed):
                assert completed() == done_before, (
                    "the fake streamed the whole text although it was cancelled"
                )
            await speak(tts)  # still usable after a cancel

    async def case_auth_errors_are_fatal(self, setup: Setup[TTS, TTSControl]) -> None:
        await common.expect_fatal(setup, speak)

    async def case_rate_limit_and_server_errors_are_retryable(self, setup: Setup[TTS, TTSControl]) -> None:
        await common.expect_retryable(setup, speak)

    async def case_stalled_vendor_times_out(self, setup: Setup[TTS, TTSControl]) -> None:
        await common.expect_timeout(setup, speak, self.timeout)

    async def case_dropped_connection_is_retryable(self, setup: Setup[TTS, TTSControl]) -> None:
        await common.expect_dropped_is_retryable(setup, lambda tts: speak(tts, LONG))

    async def case_sockets_closed(self, setup: Setup[TTS, TTSControl]) -> None:
        async def use(tts: Any) -> None:
            await speak(tts)
            stream = tts.synthesize(LONG)
            await anext(stream)
            await stream.aclose()
            await speak(tts)

        await common.expect_closed(setup, use, self.timeout)

    async def case_check_probe(self, setup: Setup[TTS, TTSControl]) -> None:
        await common.expect_check(setup)
