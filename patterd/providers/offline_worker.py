"""The event-loop side of an `stt.offline` stream whose recognition runs in one worker thread per call.

Both offline engines (pocketsphinx, whisper) take caller audio on the event loop without blocking, hand
it to a worker thread through a queue, and hand transcripts (or the worker's error) back; the engines
differ only in what the worker does with the audio (`_work`).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from patterd.errors import ProviderError
from patterd.providers.kinds import Transcript


class FlushDone:
    """Set by the worker thread once the utterance's transcript is queued; wakes the awaiting `flush()`.

    A future on the event loop, not a thread parked on a threading.Event: a flush waits as long as the
    recognizer takes (a second or more with whisper), and parked waits filled the loop's small executor
    pool, which listings and file writes share, so the API stalled for seconds under 10 offline calls.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def set(self) -> None:
        """Worker thread: the transcript is queued (it went out first through the same loop queue)."""
        self._loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass(frozen=True)
class Flush:
    """Asks the worker to finalize the open utterance; `done` is set once its transcript is queued."""

    done: FlushDone


# Caller audio reaches the worker in batches of this many bytes (8 kHz μ-law: 60 ms, three 20 ms frames,
# two of the engines' 30 ms VAD frames). Each hand-over wakes the worker thread, which then contends for
# the GIL with the event loop; per frame, ten calls made 500 wake-ups a second and the loop was caught
# holding the GIL in push_audio in 22 % of its samples (py-spy --gil, issue 14). A flush or close hands
# over what is held first, so a turn's end waits for none of it.
BATCH_BYTES = 480


class WorkerStream:
    """One call's recognition (kinds.STTStream); a subclass's `_work` reads `_inbox` in the worker thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread_name: str) -> None:
        self._loop = loop
        # μ-law audio, a Flush, or None: the stream is closing.
        self._inbox: queue.SimpleQueue[bytes | Flush | None] = queue.SimpleQueue()
        self._out: asyncio.Queue[Transcript | BaseException | None] = asyncio.Queue()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._flushes: set[asyncio.Future[None]] = set()  # flush() calls waiting for the worker
        # Resolved on the loop once the worker thread has emitted its last item (its error, then None).
        self._ended: asyncio.Future[None] = loop.create_future()
        self._held = bytearray()  # caller audio not yet handed to the worker (< BATCH_BYTES)

    # -------- event-loop side

    def start(self) -> None:
        self._thread.start()

    async def close(self) -> None:
        """Stop the worker and wait until it is done; like flush(), parks no executor thread (FlushDone)."""
        self._hand_over()
        self._inbox.put(None)
        if self._thread.ident is not None:
            await self._ended

    def push_audio(self, ulaw: bytes) -> None:
        """Caller audio (8 kHz μ-law), never blocks; handed to the worker in BATCH_BYTES batches."""
        self._held += ulaw
        if len(self._held) >= BATCH_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._held:
            self._inbox.put(bytes(self._held))
            self._held.clear()

    async def flush(self) -> None:
        """Finalize the open utterance (if any); when this returns its final transcript is queued."""
        # The worker died (its error is queued) or never ran: nothing would answer.
        if self._ended.done() or self._thread.ident is None:
            return
        done = FlushDone(self._loop)
        self._flushes.add(done.future)
        self._hand_over()
        self._inbox.put(Flush(done))
        try:
            await done.future
        finally:
            self._flushes.discard(done.future)

    def _release_flushes(self) -> None:
        """Loop: the worker is gone, after its error and end were queued; nothing will answer a flush now."""
        for future in self._flushes:
            _resolve(future)
        _resolve(self._ended)

    async def __aiter__(self) -> AsyncIterator[Transcript]:
        while True:
            item = await self._out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise ProviderError(
                    f"stt.offline recognition failed: {item}", provider="stt.offline"
                ) from item
            yield item

    # -------- worker side

    def _emit(self, item: Transcript | BaseException | None) -> None:
        self._loop.call_soon_threadsafe(self._out.put_nowait, item)

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # handed to the reader, which raises it in the event loop
            self._emit(exc)
        finally:
            self._emit(None)
            self._loop.call_soon_threadsafe(self._release_flushes)

    def _work(self) -> None:
        """Read `_inbox` until None, emitting transcripts (runs in the worker thread)."""
        raise NotImplementedError
