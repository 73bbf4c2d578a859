"""One carrier REST request with retries, and the reading of its answer: the loop the carriers' REST clients share.

A request is retried while its failure is retryable (429, 5xx, connection errors) with exponential
backoff; a 2xx answer must be empty or a JSON object; an error answer is mapped to the exception tree by
`error_for_status`, its reason read by the carrier's own `reason` function (each carrier words its error
bodies differently). Telnyx's client keeps its own loop: it retries per command and words errors apart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from patterd.errors import ProviderConnectionError, ProviderError, ProviderProtocolError, error_for_status
from patterd.lazy import lazy_import

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

Headers = Mapping[str, str] | Callable[[], Mapping[str, str]] | None


@dataclass(frozen=True)
class RestApi:
    """How one carrier's REST API names itself in errors and logs, and how its error bodies read."""

    carrier: str  # provider= on errors; logs go to `patterd.providers.<carrier>` as `<carrier>_retry`
    label: str  # the carrier as error messages name it ("Twilio")
    auth_hint: str  # what to check when the credentials are refused
    reason: Callable[[object], str | None]  # the reason in a parsed error body, None: use the raw text
    retry_after_cap_secs: float | None = None  # honour a 429's Retry-After, up to this long


async def send(
    api: RestApi,
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    shown: str,
    body: bytes | None = None,
    headers: Headers = None,
    params: Mapping[str, str] | None = None,
    max_attempts: int,
    backoff_secs: float,
) -> dict[str, Any]:
    """The JSON object a request answers ({} for an empty body); `shown` is its path as errors name it.

    `headers` may be a function, called per attempt (Vonage's bearer token is renewed as it nears expiry).
    """
    log = structlog.get_logger(f"patterd.providers.{api.carrier}")
    attempt = 0
    while True:
        attempt += 1
        delay = backoff_secs * 2 ** (attempt - 1)
        sent = headers() if callable(headers) else headers
        error: ProviderError
        try:
            async with session.request(method, url, data=body, params=params, headers=sent) as resp:
                text = await resp.text()
                if resp.status < 300:
                    return json_object(api, text, f"{method} {shown}")
                error = http_error(api, resp.status, text, f"{method} {shown}")
                retry_after = float_or_none(resp.headers.get("Retry-After"))
                if resp.status == 429 and retry_after is not None and api.retry_after_cap_secs is not None:
                    delay = min(retry_after, api.retry_after_cap_secs)
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = ProviderConnectionError(
                f"{api.label} {method} {url}: {type(exc).__name__}: {exc}", provider=api.carrier
            )
        if not error.retryable or attempt >= max_attempts:
            raise error
        log.info(f"{api.carrier}_retry", method=method, path=shown, attempt=attempt, error=str(error))
        await asyncio.sleep(delay)


def json_object(api: RestApi, text: str, request: str) -> dict[str, Any]:
    """A 2xx answer's JSON object; {} for an empty body (some answer 204)."""
    if not text.strip():
        return {}
    try:
        answer = json.loads(text)
    except ValueError:
        raise ProviderProtocolError(
            f"{api.label} {request}: answer is not JSON: {text!r:.200}", provider=api.carrier
        ) from None
    if not isinstance(answer, dict):
        raise ProviderProtocolError(
            f"{api.label} {request}: expected a JSON object, got {text!r:.200}", provider=api.carrier
        )
    return answer


def http_error(api: RestApi, status: int, text: str, request: str) -> ProviderError:
    """Map an error answer to our exception tree, with the carrier's reason (or the raw body) in it."""
    try:
        payload: object = json.loads(text)
    except ValueError:
        payload = None
    reason = api.reason(payload) or text.strip()[:200] or "no body"
    message = f"{api.label} {request}: HTTP {status} {reason}"
    return error_for_status(status, message, provider=api.carrier, auth_hint=api.auth_hint)


def twilio_style_reason(payload: object) -> str | None:
    """The reason in a {code, message, more_info, status} error body (Twilio's shape, SignalWire's LaML)."""
    if isinstance(payload, dict) and payload.get("message"):
        code = payload.get("code")
        return f"error {code}: {payload['message']}" if code else str(payload["message"])
    return None


def float_or_none(value: str | None) -> float | None:
    """A header's number, None when absent or not one."""
    try:
        return float(value) if value else None
    except ValueError:
        return None
