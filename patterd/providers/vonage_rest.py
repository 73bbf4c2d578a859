"""Vonage's Voice REST API as patterd uses it: place, hang up and transfer calls; probe the credentials.

Followed: vonage-voice 1.5.1 `voice.py` (`create_call` → POST /v1/calls answered with {uuid, status,
direction, conversation_uuid}; `hangup` → PUT /v1/calls/{uuid} {"action": "hangup"};
`transfer_call_ncco` → PUT /v1/calls/{uuid} {"action": "transfer", "destination": {"type": "ncco",
"ncco": [...]}}; `list_calls` → GET /v1/calls), `models/requests.py` (`CreateCallRequest`: `to` a list
of endpoints, `from`, `answer_url`/`answer_method` or `ncco`, `event_url`/`event_method`,
`machine_detection`) and vonage-http-client 1.5.2 (`api_host` api.nexmo.com, JSON bodies, `Authorization:
Bearer <application JWT>`); errors are RFC 7807 JSON {type, title, detail}.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from patterd.errors import ProviderProtocolError
from patterd.lazy import lazy_import
from patterd.providers import rest_call, vonage_jwt

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

CARRIER = "vonage"
TOKEN_REFRESH_SECS = 60  # make a new application JWT this long before the old one expires


class VonageRest:
    """One aiohttp session against `{base_url}/v1/calls`, a fresh RS256 JWT as it nears expiry, retries."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        application_id: str,
        private_key_pem: str,
        *,
        max_attempts: int = 3,
        retry_backoff_secs: float = 0.25,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._root = base_url.rstrip("/") + "/v1/calls"
        self._application_id = application_id
        self._key = private_key_pem
        self._max_attempts = max_attempts
        self._backoff = retry_backoff_secs
        self._now = now
        self._token = ""
        self._token_expires = 0.0

    def _authorization(self) -> str:
        now = self._now()
        if now >= self._token_expires - TOKEN_REFRESH_SECS:
            self._token = vonage_jwt.application_token(self._application_id, self._key, now)
            self._token_expires = now + vonage_jwt.TOKEN_LIFETIME_SECS
        return "Bearer " + self._token

    async def create_call(self, body: Mapping[str, Any]) -> str:
        """POST /v1/calls: Vonage answers 201 with the new call's uuid."""
        answer = await self.request("POST", "", body)
        uuid = answer.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            raise ProviderProtocolError(
                f"Vonage POST /v1/calls answer without a uuid: {answer!r:.200}", provider=CARRIER
            )
        return uuid

    async def hangup(self, uuid: str) -> None:
        await self.request("PUT", "/" + quote(uuid, safe=""), {"action": "hangup"})

    async def transfer(self, uuid: str, ncco: list[dict[str, Any]]) -> None:
        """Replace the call's NCCO (ends our websocket leg, runs `ncco`)."""
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
        await self.request("PUT", "/" + quote(uuid, safe=""), body)

    async def probe(self) -> dict[str, Any]:
        """GET /v1/calls?page_size=1: the credentials are accepted."""
        return await self.request("GET", "?page_size=1")

    async def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One REST call with retries for retryable failures (429, 5xx, connection errors)."""
        data = json.dumps(dict(body)).encode() if body is not None else None

        def headers() -> dict[str, str]:  # per attempt: the JWT may be renewed between attempts
            sent = {"Authorization": self._authorization(), "Accept": "application/json"}
            if data is not None:
                sent["Content-Type"] = "application/json"
            return sent

        return await rest_call.send(
            REST,
            self._session,
            method,
            self._root + path,
            shown="/v1/calls" + path,
            body=data,
            headers=headers,
            max_attempts=self._max_attempts,
            backoff_secs=self._backoff,
        )


def _reason(payload: object) -> str | None:
    """The reason in a Vonage error answer (RFC 7807: {type, title, detail})."""
    if isinstance(payload, dict) and (payload.get("title") or payload.get("detail")):
        return " ".join(str(payload[k]) for k in ("title", "detail") if payload.get(k))[:200]
    return None


REST = rest_call.RestApi(CARRIER, "Vonage", "check application_id and private_key", _reason)
