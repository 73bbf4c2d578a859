"""What `stt.cartesia` and `tts.cartesia` share: credentials and endpoint options, the retried handshake, the probe."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import structlog
from pydantic import Field, SecretStr, model_validator

from patterd.errors import (
    ProviderConnectionError,
    error_for_status,
)
from patterd.protocols import cartesia as wire
from patterd.providers import ws_stt
from patterd.providers.spec import ProviderOptions, env_secret

log = structlog.get_logger("patterd.providers.cartesia")

NAME = "cartesia"
KEY_ENV = "CARTESIA_API_KEY"
AUTH_HINT = f"check api_key or {KEY_ENV}"


class CartesiaOptions(ProviderOptions):
    """Options both Cartesia providers share."""

    api_key: SecretStr | None = Field(default_factory=env_secret(KEY_ENV), description="sent as `X-API-Key`")
    base_url: str = Field(
        default=wire.DEFAULT_BASE_URL, description="https:// (websockets use wss:// on the same host)"
    )
    cartesia_version: str = Field(
        default=wire.DEFAULT_VERSION,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="the `Cartesia-Version` header (2025-04-16 or 2026-03-01 are documented)",
    )
    connect_timeout_secs: float = Field(default=10.0, gt=0, description="the whole websocket handshake")
    connect_retries: int = Field(default=2, ge=0, le=10, description="retries on 429, 5xx and network errors")
    retry_backoff_ms: int = Field(default=250, ge=0, le=60000, description="first retry delay, then doubled")

    @model_validator(mode="after")
    def _check_common(self) -> CartesiaOptions:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError(f"cartesia base_url {self.base_url!r} is not an http(s):// or ws(s):// URL")
        if self.api_key is None and (parts.hostname or "").endswith("cartesia.ai"):
            raise ValueError(f"cartesia needs api_key (or the {KEY_ENV} environment variable)")
        return self

    def headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value() if self.api_key is not None else ""
        return wire.headers(key, self.cartesia_version)


async def ws_connect(
    http: aiohttp.ClientSession, url: str, options: CartesiaOptions, what: str
) -> aiohttp.ClientWebSocketResponse:
    """The handshake, retried with doubling backoff while the refusal is retryable."""
    return await ws_stt.connect_with_retries(
        lambda: ws_stt.open_websocket(
            http,
            url,
            headers=options.headers(),
            connect_timeout=options.connect_timeout_secs,
            close_timeout=2.0,
            refused=lambda exc: f"{what} refused the websocket: HTTP {exc.status}",
            unreachable=f"{what} cannot connect to {options.base_url}",
            provider=NAME,
            auth_hint=AUTH_HINT,
        ),
        retries=options.connect_retries,
        backoff_ms=options.retry_backoff_ms,
        log=log,
        event="cartesia handshake failed; retrying",
        what=what,
    )


async def probe(http: aiohttp.ClientSession, url: str, options: CartesiaOptions, what: str) -> None:
    try:
        async with http.get(url, headers=options.headers()) as response:
            body = await response.read()
            if response.status != 200:
                detail = wire.error_detail(body, response.status)
                raise error_for_status(
                    response.status,
                    f"{what} {url}: HTTP {response.status}: {detail}",
                    provider=NAME,
                    auth_hint=AUTH_HINT,
                )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ProviderConnectionError(
            f"{what} {url}: {type(exc).__name__}: {exc or 'timed out'}", provider=NAME
        ) from exc
