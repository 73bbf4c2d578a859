"""cancel_and_wait: a child's cancellation is absorbed, the caller's own never is."""

from __future__ import annotations

import asyncio

import pytest

from patterd.tasks import being_cancelled, cancel_and_wait


async def test_the_childs_cancellation_is_absorbed() -> None:
    child = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    assert await cancel_and_wait(child) is None
    assert child.cancelled() and not being_cancelled()


async def test_a_child_that_already_failed_hands_back_its_error() -> None:
    async def boom() -> None:
        raise ConnectionResetError("link gone")

    child = asyncio.create_task(boom())
    await asyncio.wait({child})
    failed = await cancel_and_wait(child)
    assert isinstance(failed, ConnectionResetError)


async def test_the_callers_cancellation_while_waiting_is_re_raised() -> None:
    stopping = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopping.set()
            await asyncio.sleep(0.05)  # winds down: the caller's cancel lands meanwhile

    async def parent() -> str:
        child = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)
        await cancel_and_wait(child)
        return "carried on"  # what suppress(CancelledError) would let happen

    task = asyncio.create_task(parent())
    await stopping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancel_already_pending_when_the_child_ends_is_kept() -> None:
    async def parent() -> None:
        child = asyncio.create_task(asyncio.Event().wait())
        await asyncio.sleep(0)
        asyncio.current_task().cancel()  # type: ignore[union-attr]  # cancelled before the child's end is awaited
        await cancel_and_wait(child)

    task = asyncio.create_task(parent())
    with pytest.raises(asyncio.CancelledError):
        await task
