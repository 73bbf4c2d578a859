"""The `engine.openai_realtime` provider's options and its websocket: opening it (with the key) and the probe."""

from __future__ import annotations

import asyncio
import difflib
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols import openai_realtime as rt
from patterd.providers.spec import ProviderOptions, env_secret

if TYPE_CHECKING:
    from patterd.providers.openai_realtime import OpenAIRealtimeEngine

PROVIDER = "openai_realtime"
CLOSE_TIMEOUT_SECS = 2.0  # how long a closing handshake may wait for the server's close frame


class OpenAIRealtimeOptions(ProviderOptions):
    """Options of `engine: {type: openai_realtime, ...}`."""

    api_key: SecretStr | None = Field(default_factory=env_secret("OPENAI_API_KEY"))
    model: str = "gpt-realtime"
    voice: str = Field(
        default="alloy",
        description=f"a Realtime voice ({', '.join(rt.VOICES)}) or a custom voice id voice_...; OpenAI "
        "refuses others (e.g. the TTS voice nova): `patterd check` warns, and calls then speak in the "
        "default voice",
    )
    temperature: float | None = Field(
        default=None, description="accepted for compatibility; the GA API has no temperature"
    )
    audio_format: Literal["pcm", "pcmu"] = "pcm"
    turn_detection: dict[str, Any] | None = Field(default_factory=lambda: dict(rt.DEFAULT_TURN_DETECTION))
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    base_url: str = "wss://api.openai.com/v1/realtime"
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_secs: float = Field(default=0.5, ge=0)
    connect_timeout_secs: float = Field(default=10.0, gt=0)
    keepalive_secs: float | None = Field(
        default=20.0,
        gt=0,
        description="ping the server this often; no pong within half of it counts as a lost connection (null: never)",
    )

    @model_validator(mode="after")
    def _require_key(self) -> OpenAIRealtimeOptions:
        if self.api_key is None or not self.api_key.get_secret_value():
            raise ValueError("OpenAI Realtime engine requires api_key (set OPENAI_API_KEY)")
        return self

    def config_warnings(self) -> list[str]:
        """Allowed but unwise settings: printed by `patterd check`, logged when the engine is built."""
        out: list[str] = []
        if self.voice not in rt.VOICES and not self.voice.startswith(rt.CUSTOM_VOICE_PREFIX):
            close = difflib.get_close_matches(self.voice, rt.VOICES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(
                f"voice {self.voice!r} is not a Realtime voice{hint}: OpenAI refuses it and calls speak in "
                f"its default voice. Realtime voices: {', '.join(rt.VOICES)}, or a custom voice id voice_..."
            )
        if self.temperature is not None:
            out.append(
                f"temperature {self.temperature} is ignored: the GA Realtime session has no temperature"
            )
        return out

    def url(self) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}model={quote(self.model)}"


async def open_socket(
    http: aiohttp.ClientSession, opts: OpenAIRealtimeOptions
) -> aiohttp.ClientWebSocketResponse:
    """Open the Realtime websocket (the handshake bounded by connect_timeout_secs).

    A refused handshake raises ProviderAuthError for a bad key (not worth retrying) and
    ProviderConnectionError otherwise.
    """
    key = opts.api_key.get_secret_value() if opts.api_key else ""
    try:
        async with asyncio.timeout(opts.connect_timeout_secs):
            return await http.ws_connect(
                opts.url(),
                headers={"Authorization": f"Bearer {key}"},
                compress=0,  # audio does not compress; deflate would only burn CPU
                max_msg_size=0,  # audio deltas have no size bound in the API
                autoping=True,
                heartbeat=opts.keepalive_secs,  # a link that hangs silently is found and reconnected
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_SECS),
            )
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (401, 403):
            raise ProviderAuthError(
                f"OpenAI Realtime refused the api_key (HTTP {exc.status} at {opts.base_url}; "
                "check api_key / OPENAI_API_KEY)",
                provider=PROVIDER,
            ) from exc
        raise ProviderConnectionError(
            f"OpenAI Realtime handshake at {opts.base_url} failed with HTTP {exc.status}", provider=PROVIDER
        ) from exc


async def check(engine: OpenAIRealtimeEngine) -> None:
    """Open a websocket and wait for session.created (proves the key and the endpoint)."""
    opts = engine.options
    try:
        ws = await open_socket(engine.http, opts)
        try:
            async with asyncio.timeout(opts.connect_timeout_secs):
                async for frame in ws:
                    if frame.type is not aiohttp.WSMsgType.TEXT:
                        break
                    event = rt.parse_server_event(frame.data)
                    if isinstance(event, rt.SessionCreated):
                        return
                    if isinstance(event, rt.ErrorEvent):
                        raise ProviderError(
                            f"OpenAI Realtime error on connect: {event.message}", provider=PROVIDER
                        )
            raise ProviderConnectionError(
                "OpenAI Realtime closed the connection before session.created", provider=PROVIDER
            )
        finally:
            await ws.close()
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise ProviderConnectionError(
            f"OpenAI Realtime at {opts.base_url} unreachable: {exc}", provider=PROVIDER
        ) from exc
