"""What the websocket engines share: keeping their link up across drops, and the tool calls they run beside it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

import aiohttp

from patterd.errors import ProviderAuthError, ProviderConnectionError
from patterd.tasks import being_cancelled, cancel_and_wait


async def keep_connected(
    connect: Callable[[], Awaitable[None]],
    *,
    provider: str,
    where: str,
    max_retries: int,
    backoff_secs: float,
    log: logging.Logger,
    lost: Callable[[], None] | None = None,
) -> NoReturn:
    """Run `connect()` again whenever the link drops, with doubling backoff, until it fails `max_retries` in a row.

    A refused key is raised at once (retrying cannot help); a link lost while the call is being
    torn down ends quietly as a cancellation. `lost` runs after each drop, before the retry.
    """
    failures = 0
    while True:
        try:
            await connect()
            failures = 0  # a healthy connection that ended: start counting afresh
        except ProviderAuthError:
            raise
        except (OSError, TimeoutError, aiohttp.ClientError, ProviderConnectionError) as exc:
            if being_cancelled():  # the call is ending: a lost link then is no reason to dial again
                raise asyncio.CancelledError from exc
            failures += 1
            if lost is not None:
                lost()
            if failures > max_retries:
                raise ProviderConnectionError(
                    f"{where} unreachable after {failures} attempts: {exc}", provider=provider
                ) from exc
            log.warning("%s connection lost (%s); retry %d/%d", provider, exc, failures, max_retries)
            await asyncio.sleep(backoff_secs * 2 ** (failures - 1))


class ToolTasks:
    """Tool calls running beside the conversation (a slow webhook must not stall the audio)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        """Stop every tool still running (without waiting)."""
        for task in list(self._tasks):
            task.cancel()

    async def stop(self) -> None:
        """Stop every tool still running and wait until they have: none is left behind when the call ends."""
        for task in list(self._tasks):
            await cancel_and_wait(task)
