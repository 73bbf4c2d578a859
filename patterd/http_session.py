"""The daemon's one outgoing HTTP session (webhook tools, fleet reports), opened on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from patterd.lazy import lazy_import

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # ~0.25 s to import: only when something sends a request


class SharedSession:
    """An aiohttp ClientSession created by the first `get()` (in the event loop), closed by `aclose()`."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def opened(self) -> bool:
        return self._session is not None

    def get(self) -> aiohttp.ClientSession:
        """The session, created now if this is the first use (needs a running event loop)."""
        if self._closed:
            raise RuntimeError("the shared HTTP session is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


# What the switchboard and call sessions are handed: the daemon's lazy session, or an open one (simulate).
HTTPSource: TypeAlias = "aiohttp.ClientSession | SharedSession"


def session_of(http: HTTPSource) -> aiohttp.ClientSession:
    """The ClientSession behind `http` (opening the shared one if needed)."""
    return http.get() if isinstance(http, SharedSession) else http
