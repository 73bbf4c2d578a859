"""SignalWire's compatibility (LaML) REST API as patterd uses it: calls, updates, recordings, the account.

Root `https://{space}.signalwire.com/api/laml/2010-04-01/Accounts/{project id}`, form-encoded bodies,
`.json` resources, basic auth project id : API token (developer.signalwire.com compatibility-api/rest:
create-a-call, update-a-call, create-a-recording, retrieve-an-account). Errors come back in Twilio's
shape {code, message, more_info, status}.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from patterd.errors import ProviderProtocolError
from patterd.lazy import lazy_import
from patterd.protocols.signalwire import API_PATH
from patterd.providers import rest_call

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

CARRIER = "signalwire"
# Errors come in Twilio's shape {code, message, more_info, status}.
REST = rest_call.RestApi(CARRIER, "SignalWire", "check project_id and token", rest_call.twilio_style_reason)


class LamlRest:
    """One aiohttp session against the project's LaML root, with retries for 429/5xx."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        project_id: str,
        *,
        max_attempts: int = 3,
        retry_backoff_secs: float = 0.25,
    ) -> None:
        self._session = session
        self._root = f"{base.rstrip('/')}{API_PATH}/Accounts/{quote(project_id, safe='')}"
        self._max_attempts = max_attempts
        self._backoff = retry_backoff_secs

    async def create_call(self, data: Sequence[tuple[str, str]]) -> str:
        answer = await self.request("POST", "/Calls.json", data)
        sid = answer.get("sid")
        if not isinstance(sid, str) or not sid:
            raise ProviderProtocolError(
                f"SignalWire Calls.json answer without a call sid: {answer!r:.200}", provider=CARRIER
            )
        return sid

    async def update_call(self, call_sid: str, data: Sequence[tuple[str, str]]) -> None:
        await self.request("POST", f"/Calls/{quote(call_sid, safe='')}.json", data)

    async def record(self, call_sid: str, data: Sequence[tuple[str, str]]) -> None:
        await self.request("POST", f"/Calls/{quote(call_sid, safe='')}/Recordings.json", data)

    async def account(self) -> dict[str, Any]:
        return await self.request("GET", ".json")

    async def request(
        self, method: str, path: str, data: Sequence[tuple[str, str]] | None = None
    ) -> dict[str, Any]:
        """One REST call with retries for retryable failures (429, 5xx, connection errors)."""
        body = urlencode(list(data)).encode() if data is not None else None
        return await rest_call.send(
            REST,
            self._session,
            method,
            self._root + path,
            shown=path,
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"} if body is not None else None,
            max_attempts=self._max_attempts,
            backoff_secs=self._backoff,
        )
