"""Plivo's Voice REST API as patterd uses it: place, hang up, transfer and record calls; probe the account.

Followed: plivo-python 4.63 `plivo/rest/client.py` (base `https://api.plivo.com/v1/Account/{auth_id}/`,
resource paths ending in `/`, JSON bodies, basic auth auth_id:auth_token) and `plivo/resources/calls.py`
(`Calls.create` → POST Call/ {from, to, answer_url, answer_method, hangup_url, ring_url, ...} answered
with `request_uuid`; `delete` → DELETE Call/{uuid}/; `cancel` → DELETE Request/{request_uuid}/;
`update`/`transfer` → POST Call/{uuid}/ {legs: aleg, aleg_url, aleg_method}; `start_recording` → POST
Call/{uuid}/Record/ {callback_url, callback_method}); errors are JSON {api_id, error}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from patterd.errors import ProviderProtocolError
from patterd.lazy import lazy_import
from patterd.providers import rest_call

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

CARRIER = "plivo"


class PlivoRest:
    """One aiohttp session against `{base_url}/v1/Account/{auth_id}/`, with retries for 429/5xx."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        auth_id: str,
        *,
        max_attempts: int = 3,
        retry_backoff_secs: float = 0.25,
    ) -> None:
        self._session = session
        self._root = f"{base_url.rstrip('/')}/v1/Account/{quote(auth_id, safe='')}/"
        self._max_attempts = max_attempts
        self._backoff = retry_backoff_secs

    async def create_call(self, fields: Mapping[str, Any]) -> str:
        """POST Call/: Plivo answers 201 with the request_uuid (the call uuid comes with the answer_url)."""
        answer = await self.request("POST", "Call/", fields)
        request_uuid = answer.get("request_uuid")
        if isinstance(request_uuid, list) and request_uuid:  # several destinations: one uuid each
            request_uuid = request_uuid[0]
        if not isinstance(request_uuid, str) or not request_uuid:
            raise ProviderProtocolError(
                f"Plivo POST Call/ answer without a request_uuid: {answer!r:.200}", provider=CARRIER
            )
        return request_uuid

    async def hangup_call(self, call_uuid: str) -> None:
        await self.request("DELETE", f"Call/{quote(call_uuid, safe='')}/")

    async def cancel_request(self, request_uuid: str) -> None:
        """Hang up an outbound call that has not been answered yet."""
        await self.request("DELETE", f"Request/{quote(request_uuid, safe='')}/")

    async def transfer(self, call_uuid: str, aleg_url: str) -> None:
        """Point the caller's leg at `aleg_url`, whose XML takes over the call (ends the stream)."""
        fields = {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}
        await self.request("POST", f"Call/{quote(call_uuid, safe='')}/", fields)

    async def record(self, call_uuid: str, callback_url: str) -> None:
        fields = {"callback_url": callback_url, "callback_method": "POST"}
        await self.request("POST", f"Call/{quote(call_uuid, safe='')}/Record/", fields)

    async def account(self) -> dict[str, Any]:
        return await self.request("GET", "")

    async def request(
        self, method: str, path: str, fields: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """One REST call with retries for retryable failures (429, 5xx, connection errors)."""
        body = json.dumps(dict(fields)).encode() if fields is not None else None
        return await rest_call.send(
            REST,
            self._session,
            method,
            self._root + path,
            shown=path or "/",
            body=body,
            headers={"Content-Type": "application/json"} if body is not None else None,
            max_attempts=self._max_attempts,
            backoff_secs=self._backoff,
        )


def _reason(payload: object) -> str | None:
    """The reason in a Plivo error answer ({api_id, error})."""
    if isinstance(payload, dict) and payload.get("error"):
        return str(payload["error"])[:200]
    return None


REST = rest_call.RestApi(CARRIER, "Plivo", "check auth_id and auth_token", _reason)
