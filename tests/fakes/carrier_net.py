"""The callers' side every media-stream carrier fake shares: a client session, its calls, public → loopback URLs."""

from __future__ import annotations

from typing import Generic, Protocol, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp


class _Call(Protocol):
    async def close(self) -> None: ...
    async def settle(self) -> None: ...


CallT = TypeVar("CallT", bound=_Call)


class CarrierNet(Generic[CallT]):
    """A carrier's phone network as the daemon sees it from the outside (Twilio, SignalWire, Plivo, Vonage fakes).

    The daemon hands out public URLs (`public_host`); the fake reaches them on the daemon's loopback address.
    """

    def __init__(self, daemon_url: str, public_host: str, *, public_scheme: str = "https") -> None:
        self.daemon_url = daemon_url.rstrip("/")
        self.public_host = public_host
        self.public_scheme = public_scheme
        self.calls: dict[str, CallT] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for call in list(self.calls.values()):
            await call.close()
            await call.settle()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, f"use `async with {type(self).__name__}(...)`"
        return self._session

    def public_url(self, path: str) -> str:
        return f"{self.public_scheme}://{self.public_host}{path}"

    def local_url(self, public_url: str) -> str:
        """Where a public URL the daemon handed out really lives (its loopback address)."""
        parts = urlsplit(public_url)
        assert parts.netloc == self.public_host, (
            f"URL {public_url!r} is not on the public host {self.public_host!r}"
        )
        local = urlsplit(self.daemon_url)
        scheme = {"https": "http", "http": "http", "wss": "ws", "ws": "ws"}[parts.scheme]
        if scheme == "ws":
            scheme = "wss" if local.scheme == "https" else "ws"
        elif local.scheme == "https":
            scheme = "https"
        return urlunsplit((scheme, local.netloc, parts.path, parts.query, ""))
