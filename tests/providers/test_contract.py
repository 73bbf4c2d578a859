"""One contract suite over every registered provider: naming, strict options, base_url, secrets, build/close."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from patterd.plugins import load_registry
from patterd.plugins.registry import LoadedSpec
from patterd.providers.spec import BuildContext, ProviderOptions

REGISTRY = load_registry()
SPECS = list(REGISTRY)

# What each kind must offer once built (the methods of its protocol in providers/kinds.py).
KIND_METHODS = {
    "carrier": ("handle_webhook", "handle_media", "dial", "hangup", "transfer", "start_recording"),
    "engine": ("session",),
    "stt": ("stream",),
    "tts": ("synthesize",),
    "llm": ("complete",),
    "vad": ("stream",),
    "tunnel": ("public_host",),
}
# Vonage's build checks that its private key is a real RSA key: a throwaway one made here.
_VONAGE_KEY_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    .decode()
)
DUMMY_ENV = {
    "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
    "TWILIO_AUTH_TOKEN": "dummy-secret-twilio",
    "TELNYX_API_KEY": "dummy-secret-telnyx",
    "TELNYX_CONNECTION_ID": "1",
    "OPENAI_API_KEY": "dummy-secret-openai",
    "ELEVENLABS_API_KEY": "dummy-secret-elevenlabs",
    "DEEPGRAM_API_KEY": "dummy-secret-deepgram",
    "ANTHROPIC_API_KEY": "dummy-secret-anthropic",
    "LMNT_API_KEY": "dummy-secret-lmnt",
    "CARTESIA_API_KEY": "dummy-secret-cartesia",
    "ASSEMBLYAI_API_KEY": "dummy-secret-assemblyai",
    "RIME_API_KEY": "dummy-secret-rime",
    "SONIOX_API_KEY": "dummy-secret-soniox",
    "SPEECHMATICS_API_KEY": "dummy-secret-speechmatics",
    "PLIVO_AUTH_ID": "MAZDQ1MTM0ZTE5ZDM0NDQ3",
    "PLIVO_AUTH_TOKEN": "dummy-secret-plivo",
    "SIGNALWIRE_PROJECT_ID": "2b6e2f7e-2b5c-4f7e-9c59-0c2b1f1d9e11",
    "SIGNALWIRE_TOKEN": "dummy-secret-signalwire",
    "SIGNALWIRE_SPACE_URL": "example.signalwire.com",
    "SIGNALWIRE_SIGNING_KEY": "dummy-secret-signalwire-signing",
    "VONAGE_APPLICATION_ID": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    "VONAGE_PRIVATE_KEY": _VONAGE_KEY_PEM,
    "VONAGE_SIGNATURE_SECRET": "dummy-secret-vonage-signature",
}
# Options a provider cannot be built without (beyond credentials from the environment).
REQUIRED_OPTIONS: dict[str, dict[str, object]] = {
    "tunnel.static": {"hostname": "gw.example.com"},
    "engine.elevenlabs_convai": {"agent_id": "agent_dummy"},  # which agent has no default
}
# Providers whose build starts an external program or reaches the network: checked for options only.
NOT_BUILT = {"tunnel.cloudflared"}


def test_no_broken_builtins() -> None:
    assert not REGISTRY.broken, REGISTRY.broken


@pytest.mark.parametrize("loaded", SPECS, ids=lambda s: s.spec.key)
def test_spec_shape(loaded: LoadedSpec) -> None:
    spec = loaded.spec
    assert spec.kind in KIND_METHODS
    assert spec.summary and "\n" not in spec.summary and len(spec.summary) <= 120
    assert issubclass(spec.options, ProviderOptions)
    assert spec.options.model_config.get("extra") == "forbid", "unknown keys must be errors"
    spec.options.model_json_schema()  # `patterd schema` needs every options model to have a schema
    fields = spec.options.model_fields
    if spec.capabilities.needs_network and spec.kind != "tunnel":
        assert "base_url" in fields, f"{spec.key}: every network provider takes base_url"
    for name, field in fields.items():
        secretish = name.endswith(("_key", "token", "secret", "password")) and name != "public_key"
        if secretish:
            assert "SecretStr" in str(field.annotation), f"{spec.key}.{name} must be a SecretStr"


@pytest.mark.parametrize(
    "loaded", [s for s in SPECS if s.spec.key not in NOT_BUILT], ids=lambda s: s.spec.key
)
async def test_builds_and_closes(loaded: LoadedSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    spec = loaded.spec
    options = spec.options.model_validate(REQUIRED_OPTIONS.get(spec.key, {}))
    ctx = BuildContext(public_host="gw.example.com", extra={"local_url": "http://127.0.0.1:9"})
    async with spec.build(options, ctx) as provider:
        for method in KIND_METHODS[spec.kind]:
            assert hasattr(provider, method), f"{spec.key} lacks {method}"
        text = repr(provider) + repr(options) + str(options)
        for secret in DUMMY_ENV.values():
            if secret.startswith("dummy-secret"):
                assert secret not in text, f"{spec.key} shows a secret in its repr"
