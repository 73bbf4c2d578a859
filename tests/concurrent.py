"""Module fixtures that run their tests' slow real-time calls at once: which cases were selected, and teardown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest


def selected(request: pytest.FixtureRequest, test_name: str, param: str) -> list[str]:
    """The `param` values of `test_name`'s cases this session runs in the requesting module (all, or those -k kept)."""
    return [
        str(item.callspec.params[param])
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.originalname == test_name and item.path == request.path
    ]


@contextlib.asynccontextmanager
async def cancelled_at_exit(tasks: Mapping[Any, asyncio.Task[Any]]) -> AsyncIterator[None]:
    """Cancel and await every task still running when the block ends (the module fixture's teardown)."""
    try:
        yield
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
