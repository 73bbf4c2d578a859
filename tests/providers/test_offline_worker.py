"""WorkerStream, the loop side of the offline STT engines: flushes wait on the loop, not in executor threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from patterd.errors import ProviderError
from patterd.providers.kinds import Transcript
from patterd.providers.offline_worker import BATCH_BYTES, Flush, WorkerStream

SLOW = 10.0  # bound on waits for something that should happen at once


class GatedWorker(WorkerStream):
    """Finalizes each flush only once `gate` opens (a recognizer busy with a long utterance)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, gate: threading.Event, fail: bool = False) -> None:
        super().__init__(loop, "test-offline-worker")
        self.gate = gate
        self.fail = fail

    def _work(self) -> None:
        while (item := self._inbox.get()) is not None:
            if isinstance(item, Flush):
                self.gate.wait()
                if self.fail:
                    raise RuntimeError("model crashed")
                self._emit(Transcript("hello", is_final=True, end_of_utterance=True))
                item.done.set()


async def test_waiting_flushes_leave_the_loops_executor_free() -> None:
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    streams = [GatedWorker(loop, gate) for _ in range(12)]  # more than the default executor's threads
    for stream in streams:
        stream.start()
    flushes = [asyncio.ensure_future(stream.flush()) for stream in streams]
    await asyncio.sleep(0)  # every flush is now waiting on its recognizer
    try:
        # Listings and file writes use the same executor: it must answer while every recognizer is busy.
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), SLOW) == 42
        assert not any(f.done() for f in flushes)
    finally:
        gate.set()  # a failure must not leave the workers (and any parked threads) waiting forever
    await asyncio.wait_for(asyncio.gather(*flushes), SLOW)
    for stream in streams:
        # flush() returned after its transcript was queued: it is there to read at once.
        got = await asyncio.wait_for(anext(aiter(stream)), SLOW)
        assert got.text == "hello" and got.end_of_utterance
        await stream.close()


async def test_a_worker_that_dies_releases_its_flush_and_reports_the_error() -> None:
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    gate.set()
    stream = GatedWorker(loop, gate, fail=True)
    stream.start()
    await asyncio.wait_for(stream.flush(), SLOW)
    with pytest.raises(ProviderError, match="model crashed"):
        await asyncio.wait_for(anext(aiter(stream)), SLOW)
    await asyncio.wait_for(stream.flush(), SLOW)  # after the worker is gone: returns at once
    await stream.close()


async def test_closing_busy_streams_leaves_the_loops_executor_free() -> None:
    # Ten calls ending at once used to park one executor thread each on the worker's join.
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    streams = [GatedWorker(loop, gate) for _ in range(12)]
    for stream in streams:
        stream.start()
    flushes = [asyncio.ensure_future(stream.flush()) for stream in streams]
    closes = [asyncio.ensure_future(stream.close()) for stream in streams]
    await asyncio.sleep(0)  # every close now waits for a recognizer still busy with its flush
    try:
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 42), SLOW) == 42
        assert not any(c.done() for c in closes)
    finally:
        gate.set()
    await asyncio.wait_for(asyncio.gather(*flushes, *closes), SLOW)
    assert all(stream._ended.done() for stream in streams)  # close() returned once the worker had ended


class RecordingWorker(WorkerStream):
    """Records what reaches the worker thread: audio sizes and flushes, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop, "test-offline-worker")
        self.seen: list[int | str] = []

    def _work(self) -> None:
        while (item := self._inbox.get()) is not None:
            if isinstance(item, Flush):
                self.seen.append("flush")
                item.done.set()
            else:
                self.seen.append(len(item))
        self.seen.append("closed")


async def test_audio_reaches_the_worker_in_batches_and_a_flush_takes_what_is_held() -> None:
    # One wake-up of the worker per 60 ms, not per 20 ms frame: each wake-up contends for the GIL.
    stream = RecordingWorker(asyncio.get_running_loop())
    stream.start()
    frame = b"\xff" * 160
    for _ in range(7):
        stream.push_audio(frame)
    await asyncio.wait_for(stream.flush(), SLOW)  # the 7th frame is not left behind the flush
    stream.push_audio(frame)
    await stream.close()
    assert stream.seen == [BATCH_BYTES, BATCH_BYTES, 160, "flush", 160, "closed"]
