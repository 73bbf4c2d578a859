"""A worker's view of its siblings: their status and call control over their private HTTP sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patterd.lazy import lazy_import
from patterd.protocols import jsontext
from patterd.workers.identity import WorkerIdentity

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # asked only when a sibling is (start-up, issue 14)

PEER_TIMEOUT_SECS = 2.0  # a sibling too busy to answer this fast is shown as unreachable, not waited for
PEER_SCOPE = "scope=worker"  # a request that a worker answers for itself only (never forwarded again)


class Peers:
    """Asks every other worker of the same supervisor (their `worker-N.sock` in the run directory)."""

    def __init__(self, identity: WorkerIdentity, token: Callable[[], str | None]) -> None:
        self.identity = identity
        self.worker = identity.index
        self.pid = os.getpid()
        self._token = token

    async def _request(self, path: Path, method: str, target: str, body: bytes | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_SECS)
        connector = aiohttp.UnixConnector(path=str(path))
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.request(method, "http://worker" + target, data=body, headers=headers) as resp,
        ):
            raw = await resp.read()
            return resp.status, jsontext.loads(raw) if raw else None

    async def statuses(self) -> list[dict[str, Any]]:
        """Every sibling's own status (`scope=worker`); an unreachable one is `{"worker": N, "error": …}`."""

        async def one(index: int, path: Path) -> dict[str, Any]:
            try:
                status, body = await self._request(path, "GET", f"/api/v1/status?{PEER_SCOPE}", None)
            except (TimeoutError, OSError, aiohttp.ClientError, jsontext.JSONError) as exc:
                return {"worker": index, "error": f"unreachable: {type(exc).__name__}"}
            if status != 200 or not isinstance(body, dict):
                return {"worker": index, "error": f"answered {status}"}
            return body

        return list(await asyncio.gather(*(one(i, p) for i, p in self.identity.siblings())))

    async def forward(self, method: str, target: str, body: bytes | None) -> tuple[int, Any] | None:
        """Send a call-control request to the siblings; the first 2xx answer, or None if none took it."""
        joiner = "&" if "?" in target else "?"
        for _index, path in self.identity.siblings():
            try:
                status, answer = await self._request(path, method, f"{target}{joiner}{PEER_SCOPE}", body)
            except (TimeoutError, OSError, aiohttp.ClientError, jsontext.JSONError):
                continue
            if 200 <= status < 300:
                return status, answer
        return None

    async def hand_over(self, call_id: str) -> None:
        """This worker took the media of a call a sibling answered: the sibling forgets its ringing copy.

        Without it, that copy would time out waiting for media and end the call `failed` in the record.
        """
        target = f"/api/v1/calls/{call_id}/handover?{PEER_SCOPE}"
        for _index, path in self.identity.siblings():
            try:
                status, answer = await self._request(path, "POST", target, b"{}")
            except (TimeoutError, OSError, aiohttp.ClientError, jsontext.JSONError):
                continue
            if status == 200 and isinstance(answer, dict) and answer.get("handed_over"):
                return
