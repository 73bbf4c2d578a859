"""Stopping a child task without swallowing the cancellation of the task that stops it."""

from __future__ import annotations

import asyncio
from typing import Any


def being_cancelled() -> bool:
    """True when the running task has a cancellation pending (someone called its `cancel()`)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(task: asyncio.Task[Any]) -> BaseException | None:
    """Cancel `task`, wait until it has finished, and return the exception it failed with, if any.

    The child's own CancelledError is expected and absorbed. Ours is not: `suppress(CancelledError)`
    around `await task` cannot tell the two apart, and when our task is cancelled while it waits
    (a caller hanging up just as the engine link drops) the cancellation would be swallowed and
    the caller would carry on as if nothing had asked it to stop. So a CancelledError is re-raised
    whenever the running task itself is being cancelled.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if being_cancelled():
            raise
        return None
    except Exception as exc:  # the child failed before the cancel landed: the caller decides what it means
        return exc
    return None
