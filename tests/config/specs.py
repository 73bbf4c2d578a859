"""Small stand-in ProviderSpecs for config tests, shaped like the real providers' Options."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from patterd.plugins.registry import Registry
from patterd.providers import local, telnyx, twilio
from patterd.providers.spec import (
    BuildContext,
    ProviderOptions,
    ProviderSpec,
    env_secret,
    env_str,
    missing_credentials,
)

CREDENTIAL_VARS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TELNYX_API_KEY",
    "TELNYX_CONNECTION_ID",
    "TELNYX_PUBLIC_KEY",
    "OPENAI_API_KEY",
    "DEEPGRAM_API_KEY",
    "ELEVENLABS_API_KEY",
    "CLOUDFLARED_TOKEN",
)


@asynccontextmanager
async def _build(options: Any, ctx: BuildContext) -> AsyncIterator[Any]:
    yield options


class TwilioOptions(ProviderOptions):
    account_sid: str | None = Field(default_factory=env_str("TWILIO_ACCOUNT_SID"))
    auth_token: SecretStr | None = Field(default_factory=env_secret("TWILIO_AUTH_TOKEN"))
    base_url: str = "https://api.twilio.com"

    @model_validator(mode="after")
    def _credentials(self) -> TwilioOptions:
        problem = missing_credentials(
            "Twilio carrier",
            (
                ("account_sid", "TWILIO_ACCOUNT_SID", self.account_sid),
                ("auth_token", "TWILIO_AUTH_TOKEN", self.auth_token),
            ),
        )
        if problem:
            raise ValueError(problem)
        return self


class TelnyxOptions(ProviderOptions):
    api_key: SecretStr | None = Field(default_factory=env_secret("TELNYX_API_KEY"))
    connection_id: str | None = Field(default_factory=env_str("TELNYX_CONNECTION_ID"))
    public_key: str | None = Field(default_factory=env_str("TELNYX_PUBLIC_KEY"))
    base_url: str = "https://api.telnyx.com/v2"

    @model_validator(mode="after")
    def _credentials(self) -> TelnyxOptions:
        problem = missing_credentials(
            "Telnyx carrier",
            (
                ("api_key", "TELNYX_API_KEY", self.api_key),
                ("connection_id", "TELNYX_CONNECTION_ID", self.connection_id),
            ),
        )
        if problem:
            raise ValueError(problem)
        return self


class LocalOptions(ProviderOptions):
    pass


class RealtimeOptions(ProviderOptions):
    api_key: SecretStr | None = Field(default_factory=env_secret("OPENAI_API_KEY"))
    model: str = "gpt-realtime"
    voice: str = "alloy"
    base_url: str = "wss://api.openai.com/v1"

    @model_validator(mode="after")
    def _credentials(self) -> RealtimeOptions:
        if self.api_key is None:
            raise ValueError("api_key is required (or set $OPENAI_API_KEY)")
        return self


class DeepgramOptions(ProviderOptions):
    api_key: SecretStr | None = Field(default_factory=env_secret("DEEPGRAM_API_KEY"))
    model: str = "nova-3"
    endpointing_ms: int = Field(300, ge=10, le=10000)
    base_url: str = "wss://api.deepgram.com"


class OfflineSttOptions(ProviderOptions):
    language: str = "en-us"


class OpenAILlmOptions(ProviderOptions):
    api_key: SecretStr | None = Field(default_factory=env_secret("OPENAI_API_KEY"))
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    base_url: str = "https://api.openai.com/v1"


class ScriptLlmOptions(ProviderOptions):
    replies: list[str] = Field(default_factory=list)


class ElevenLabsOptions(ProviderOptions):
    api_key: SecretStr | None = Field(default_factory=env_secret("ELEVENLABS_API_KEY"))
    voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    model_id: str = "eleven_flash_v2_5"
    base_url: str = "wss://api.elevenlabs.io"


class OfflineTtsOptions(ProviderOptions):
    voice: str = "en-us"
    speed_wpm: int = Field(175, ge=80, le=450)


class OfflineVadOptions(ProviderOptions):
    aggressiveness: Literal[0, 1, 2, 3] = 2


class CloudflaredOptions(ProviderOptions):
    binary: str = "cloudflared"
    token: SecretStr | None = Field(default_factory=env_secret("CLOUDFLARED_TOKEN"))


class StaticTunnelOptions(ProviderOptions):
    hostname: str


BUILT_IN_FACTS = {spec.name: spec.carrier for spec in (twilio.SPEC, telnyx.SPEC, local.SPEC)}


def _spec(kind: str, name: str, options: type[ProviderOptions]) -> ProviderSpec:
    # carriers keep the built-in's facts (needs a number, default carrier, ...): the loader reads them
    facts = BUILT_IN_FACTS.get(name) if kind == "carrier" else None
    return ProviderSpec(
        kind=kind, name=name, options=options, build=_build, summary=f"test {kind} {name}", carrier=facts
    )


SPECS = (
    _spec("carrier", "twilio", TwilioOptions),
    _spec("carrier", "telnyx", TelnyxOptions),
    _spec("carrier", "local", LocalOptions),
    _spec("engine", "openai_realtime", RealtimeOptions),
    _spec("stt", "deepgram", DeepgramOptions),
    _spec("stt", "offline", OfflineSttOptions),
    _spec("llm", "openai", OpenAILlmOptions),
    _spec("llm", "script", ScriptLlmOptions),
    _spec("tts", "elevenlabs", ElevenLabsOptions),
    _spec("tts", "offline", OfflineTtsOptions),
    _spec("vad", "offline", OfflineVadOptions),
    _spec("tunnel", "cloudflared", CloudflaredOptions),
    _spec("tunnel", "static", StaticTunnelOptions),
)


def make_registry() -> Registry:
    """A registry holding only the stand-in specs above."""
    registry = Registry()
    for spec in SPECS:
        registry.add(spec, "tests")
    return registry
