"""The `engine.elevenlabs_convai` provider's options and its websocket: the signed URL, the handshake, the probe."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from pydantic import Field, SecretStr, model_validator

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols import elevenlabs_convai as ev
from patterd.providers.spec import ProviderOptions, env_secret, env_str

if TYPE_CHECKING:
    from patterd.providers.elevenlabs_convai import ConvAIEngine

log = logging.getLogger("patterd.providers.elevenlabs_convai")

PROVIDER = ev.PROVIDER
KEY_VARIABLE = "ELEVENLABS_API_KEY"
CLOSE_TIMEOUT_SECS = 2.0


class ElevenLabsConvAIOptions(ProviderOptions):
    """Options of `engine: {type: elevenlabs_convai, ...}`."""

    agent_id: str | None = Field(
        default_factory=env_str("ELEVENLABS_AGENT_ID"),
        description="the ElevenLabs agent to talk to (default $ELEVENLABS_AGENT_ID)",
    )
    api_key: SecretStr | None = Field(
        default_factory=env_secret(KEY_VARIABLE),
        description="fetches a signed conversation URL for a private agent (default $ELEVENLABS_API_KEY)",
    )
    private: bool = Field(
        default=True,
        description="the agent requires authentication: each connection first GETs a signed URL with "
        "api_key (false: a public agent, connected to directly)",
    )
    base_url: str = "https://api.elevenlabs.io"
    override_prompt: bool = Field(
        default=True, description="send the agent's system_prompt as the prompt override (when not empty)"
    )
    override_first_message: bool = Field(
        default=True, description="send the agent's first_message as the first-message override"
    )
    voice_id: str | None = Field(default=None, description="voice override (null: the agent's voice)")
    language: str | None = Field(default=None, description="language override (null: the agent's language)")
    send_variables: bool = Field(
        default=True, description="send the agent's variables as the conversation's dynamic_variables"
    )
    max_retries: int = Field(default=3, ge=0)
    retry_backoff_secs: float = Field(default=0.5, ge=0)
    connect_timeout_secs: float = Field(default=10.0, gt=0)
    keepalive_secs: float | None = Field(
        default=20.0, gt=0, description="websocket ping interval; no pong within half of it is a lost link"
    )

    @model_validator(mode="after")
    def _require(self) -> ElevenLabsConvAIOptions:
        if not self.agent_id:
            raise ValueError("ElevenLabs Agents engine requires agent_id (set ELEVENLABS_AGENT_ID)")
        if self.private and (self.api_key is None or not self.api_key.get_secret_value()):
            raise ValueError(
                f"a private ElevenLabs agent requires api_key (set {KEY_VARIABLE}), or set private: false"
            )
        return self

    def config_warnings(self) -> list[str]:
        """Printed by `patterd check`: what the agent's own settings at ElevenLabs must allow."""
        return [
            "elevenlabs_convai: the agent's audio formats are set at ElevenLabs; set both "
            "asr.user_input_audio_format and tts.agent_output_audio_format to ulaw_8000, otherwise every "
            "frame is transcoded (`patterd check --probe` reads them); overrides sent (prompt, "
            "first_message, voice, language) must be enabled in the agent's security settings, and "
            "patterd tools must exist on the agent as client tools of the same name"
        ]

    def agent(self) -> str:
        assert self.agent_id is not None  # the validator made sure
        return self.agent_id

    def key(self) -> str:
        return self.api_key.get_secret_value() if self.api_key else ""


def _auth_error(status: int, opts: ElevenLabsConvAIOptions, what: str) -> ProviderError:
    if status in (401, 403):
        return ProviderAuthError(
            f"ElevenLabs refused the api_key at {what} (HTTP {status}; check api_key / {KEY_VARIABLE})",
            provider=PROVIDER,
        )
    if status == 404:
        return ProviderError(
            f"ElevenLabs has no agent {opts.agent()!r} (HTTP 404 at {what}; check agent_id / ELEVENLABS_AGENT_ID)",
            provider=PROVIDER,
        )
    return ProviderConnectionError(f"ElevenLabs {what} failed with HTTP {status}", provider=PROVIDER)


async def _get_json(http: aiohttp.ClientSession, url: str, opts: ElevenLabsConvAIOptions, what: str) -> str:
    async with asyncio.timeout(opts.connect_timeout_secs):
        async with http.get(url, headers={"xi-api-key": opts.key()}) as response:
            body = await response.text()
            if response.status != 200:
                raise _auth_error(response.status, opts, what)
            return body


async def conversation_url(http: aiohttp.ClientSession, opts: ElevenLabsConvAIOptions) -> str:
    """Where to connect: a fresh signed URL for a private agent (they expire), else the public URL."""
    if not opts.private:
        return ev.conversation_url(opts.base_url, opts.agent())
    body = await _get_json(http, ev.signed_url_request(opts.base_url, opts.agent()), opts, "get-signed-url")
    try:
        return ev.parse_signed_url(body)
    except ev.ConvAIProtocolError as exc:
        raise ProviderConnectionError(str(exc), provider=PROVIDER) from exc


async def open_socket(
    http: aiohttp.ClientSession, opts: ElevenLabsConvAIOptions
) -> aiohttp.ClientWebSocketResponse:
    """Open the conversation websocket (signed URL first for a private agent), bounded by connect_timeout_secs."""
    try:
        url = await conversation_url(http, opts)
        # A signed URL carries its own credential; a public agent gets the key in the header when we have one.
        headers = {"xi-api-key": opts.key()} if not opts.private and opts.key() else {}
        async with asyncio.timeout(opts.connect_timeout_secs):
            return await http.ws_connect(
                url,
                headers=headers,
                compress=0,
                max_msg_size=0,
                autoping=True,
                heartbeat=opts.keepalive_secs,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_SECS),
            )
    except aiohttp.WSServerHandshakeError as exc:
        raise _auth_error(exc.status, opts, "the conversation handshake") from exc
    except TimeoutError as exc:
        raise ProviderConnectionError(
            f"ElevenLabs Agents at {opts.base_url} did not answer within {opts.connect_timeout_secs} s",
            provider=PROVIDER,
        ) from exc


async def check(engine: ConvAIEngine) -> None:
    """GET the agent's configuration with the key (or, keyless, open a conversation); warn about formats."""
    opts = engine.options
    try:
        if not opts.key():
            ws = await open_socket(engine.http, opts)
            await ws.close()
            return
        body = await _get_json(engine.http, ev.agent_request(opts.base_url, opts.agent()), opts, "the agent")
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise ProviderConnectionError(
            f"ElevenLabs at {opts.base_url} unreachable: {exc}", provider=PROVIDER
        ) from exc
    try:
        formats = ev.parse_agent_formats(body)
    except ev.ConvAIProtocolError as exc:
        raise ProviderError(f"ElevenLabs agent configuration unreadable: {exc}", provider=PROVIDER) from exc
    problems = formats.problems()
    if problems:
        warning = (
            f"elevenlabs_convai agent {opts.agent()}: {'; '.join(problems)}; patterd transcodes every "
            "frame to and from ulaw_8000 (set both to ulaw_8000 at ElevenLabs to avoid it)"
        )
        engine.warnings = [*engine.warnings, warning]
        log.warning("%s", warning)
        print(f"warning: {warning}")  # `patterd check --probe` shows warnings on stdout
