"""Plivo's Voice REST API as patterd uses it: place, hang up, transfer and record calls; probe the account.

Followed: plivo-python 4.63 `plivo/rest/client.py` (base `https://api.plivo.com/v1/Account/{auth_id}/`,
resource paths ending in `/`, JSON bodies, basic auth auth_id:auth_token) and `plivo/resources/calls.py`
(`Calls.create` → POST Call/ {from, to, answer_url, answer_method, hangup_url, ring_url, ...} answered
with `request_uuid`; `delete` → DELETE Call/{uuid}/; `cancel` → DELETE Request/{request_uuid}/;
`update`/`transfer` → POST Call/{uuid}/ {legs: aleg, aleg_url, aleg_method}; `start_recording` → POST
Call/{uuid}/Record/ {callback_url, callback_method}); errors are JSON {api_id, error}.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from patterd.errors import ProviderConnectionError, ProviderError, ProviderProtocolError, error_for_status

log = structlog.get_logger("patterd.providers.plivo")
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
        url = self._root + path
        body = json.dumps(dict(fields)).encode() if fields is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            error: ProviderError
            try:
                async with self._session.request(method, url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    if resp.status < 300:
                        return _json_object(text, method, path)
                    error = _http_error(resp.status, text, method, path)
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = ProviderConnectionError(
                    f"Plivo {method} {url}: {type(exc).__name__}: {exc}", provider=CARRIER
                )
            if not error.retryable or attempt >= self._max_attempts:
                raise error
            log.info("plivo_retry", method=method, path=path, attempt=attempt, error=str(error))
            await asyncio.sleep(self._backoff * 2 ** (attempt - 1))


def _json_object(text: str, method: str, path: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        answer = json.loads(text)
    except ValueError:
        raise ProviderProtocolError(
            f"Plivo {method} {path}: answer is not JSON: {text!r:.200}", provider=CARRIER
        ) from None
    if not isinstance(answer, dict):
        raise ProviderProtocolError(f"Plivo {method} {path}: expected a JSON object", provider=CARRIER)
    return answer


def _http_error(status: int, text: str, method: str, path: str) -> ProviderError:
    """Map a Plivo error answer ({api_id, error}) to our exception tree."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("error"):
        reason = str(payload["error"])[:200]
    else:
        reason = text.strip()[:200] or "no body"
    message = f"Plivo {method} {path or '/'}: HTTP {status} {reason}"
    return error_for_status(status, message, provider=CARRIER, auth_hint="check auth_id and auth_token")
