"""SignalWire's compatibility (LaML) REST API as patterd uses it: calls, updates, recordings, the account.

Root `https://{space}.signalwire.com/api/laml/2010-04-01/Accounts/{project id}`, form-encoded bodies,
`.json` resources, basic auth project id : API token (developer.signalwire.com compatibility-api/rest:
create-a-call, update-a-call, create-a-recording, retrieve-an-account). Errors come back in Twilio's
shape {code, message, more_info, status}.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import structlog

from patterd.errors import ProviderConnectionError, ProviderError, ProviderProtocolError, error_for_status
from patterd.protocols.signalwire import API_PATH

log = structlog.get_logger("patterd.providers.signalwire")
CARRIER = "signalwire"


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
        url = self._root + path
        body = urlencode(list(data)).encode() if data is not None else None
        headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else None
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
                    f"SignalWire {method} {url}: {type(exc).__name__}: {exc}", provider=CARRIER
                )
            if not error.retryable or attempt >= self._max_attempts:
                raise error
            log.info("signalwire_retry", method=method, path=path, attempt=attempt, error=str(error))
            await asyncio.sleep(self._backoff * 2 ** (attempt - 1))


def _json_object(text: str, method: str, path: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        answer = json.loads(text)
    except ValueError:
        raise ProviderProtocolError(
            f"SignalWire {method} {path}: answer is not JSON: {text!r:.200}", provider=CARRIER
        ) from None
    if not isinstance(answer, dict):
        raise ProviderProtocolError(f"SignalWire {method} {path}: expected a JSON object", provider=CARRIER)
    return answer


def _http_error(status: int, text: str, method: str, path: str) -> ProviderError:
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("message"):
        code = payload.get("code")
        reason = f"error {code}: {payload['message']}" if code else str(payload["message"])
    else:
        reason = text.strip()[:200] or "no body"
    message = f"SignalWire {method} {path}: HTTP {status} {reason}"
    return error_for_status(status, message, provider=CARRIER, auth_hint="check project_id and token")
