"""Call tokens: genuine ones admit, tampered, foreign, expired and replayed ones do not; the secret never shows."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patterd.cluster.media_gate import MediaGate
from patterd.cluster.tokens import (
    TOKEN_TTL_SECS,
    CallClaim,
    CallTokens,
    MemoryNonces,
    TokenError,
    new_nonce,
    resolve_secret,
)
from patterd.config.cluster import ClusterConfig

SECRET = b"s3cret-of-the-cluster-32-bytes!!"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def claim(exp: float, **over: object) -> CallClaim:
    fields: dict[str, object] = {
        "call_id": "call_abc",
        "agent": "desk",
        "direction": "inbound",
        "caller": "+15550001111",
        "callee": "+15550002222",
        "carrier": "twilio",
        "carrier_call_id": "CA123",
        "exp": exp,
        "nonce": new_nonce(),
        "origin": "replica-a",
        **over,
    }
    return CallClaim(**fields)  # type: ignore[arg-type]


def test_a_genuine_token_carries_its_call() -> None:
    clock = Clock()
    tokens = CallTokens(SECRET, clock=clock)
    original = claim(clock() + 60, variables={"name": "Ada"}, voicemail_message="hi", trace_id="t1")
    assert tokens.verify(tokens.issue(original)) == original


def test_expired_foreign_and_malformed_tokens_are_refused() -> None:
    clock = Clock()
    tokens = CallTokens(SECRET, clock=clock)
    token = tokens.issue(claim(clock() + 60))
    other = CallTokens(b"another-secret-of-32-bytes-long!", clock=clock)
    with pytest.raises(TokenError) as foreign:
        other.verify(token)
    assert foreign.value.reason == "token_invalid"
    for bad in ("", "abc", "a.b.c", "!!.!!", "x" * 10_000, token.split(".")[0] + "."):
        with pytest.raises(TokenError) as err:
            tokens.verify(bad)
        assert err.value.reason == "token_invalid"
    clock.now += 61
    with pytest.raises(TokenError) as expired:
        tokens.verify(token)
    assert expired.value.reason == "token_expired"


def test_expiry_follows_the_direction() -> None:
    clock = Clock()
    tokens = CallTokens(SECRET, clock=clock)
    assert tokens.expiry("inbound") == clock() + TOKEN_TTL_SECS["inbound"]
    assert tokens.expiry("outbound") == clock() + TOKEN_TTL_SECS["outbound"]
    assert TOKEN_TTL_SECS["outbound"] > 120  # outlives the outbound ringing window (MEDIA_TIMEOUT_SECS)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_change_to_a_token_makes_it_invalid(data: st.DataObject) -> None:
    tokens = CallTokens(SECRET, clock=Clock())
    token = tokens.issue(claim(Clock()() + 60))
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != token[position]))
    tampered = token[:position] + replacement + token[position + 1 :]
    try:
        verified = tokens.verify(tampered)
    except TokenError as exc:
        assert exc.reason == "token_invalid"
    else:  # base64 padding bits: a change that decodes to the very same bytes is the same token
        assert verified == tokens.verify(token)


def test_a_forged_payload_with_an_old_mac_is_refused() -> None:
    tokens = CallTokens(SECRET, clock=Clock())
    body, mac = tokens.issue(claim(Clock()() + 60)).split(".")
    import base64

    forged = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged["call_id"] = "call_other"
    raw = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        tokens.verify(raw + "." + mac)


def test_the_gate_admits_a_token_once_and_only_for_its_call() -> None:
    async def run() -> None:
        gate = MediaGate(CallTokens(SECRET), replica="a")
        token = gate.tokens.issue(claim(gate.tokens.expiry("inbound")))
        assert await gate.check("call_other", token) == "token_invalid"
        admitted = await gate.check("call_abc", token)
        assert isinstance(admitted, CallClaim) and admitted.origin == "replica-a"
        assert await gate.check("call_abc", token) == "token_replayed"

    asyncio.run(run())


def test_used_nonces_are_forgotten_after_they_expire() -> None:
    async def run() -> None:
        clock = Clock()
        nonces = MemoryNonces(clock)
        assert await nonces.use("n0", clock() + 1)
        assert not await nonces.use("n0", clock() + 1)
        clock.now += 5
        for n in range(1100):  # past the pruning size: expired ones go
            assert await nonces.use(f"m{n}", clock() + 100)
        assert "n0" not in nonces._used

    asyncio.run(run())


def test_the_secret_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "cluster-secret-value-0123456789"
    monkeypatch.setenv("PATTERD_CLUSTER_SECRET", secret)
    key, shared = resolve_secret(None)
    assert key == secret.encode() and shared
    assert secret not in repr(CallTokens(key))
    config = ClusterConfig.model_validate({"redis": "redis://:pw@localhost:6379/0"})
    public = json.dumps(config.to_public_dict())
    assert config.secret is not None and config.secret.get_secret_value() == secret
    assert secret not in public and "pw" not in public and secret not in repr(config)
    monkeypatch.delenv("PATTERD_CLUSTER_SECRET")
    key2, shared2 = resolve_secret(None)
    assert not shared2 and len(key2) == 32 and key2 != resolve_secret(None)[0]  # random per process


def test_a_short_secret_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        ClusterConfig.model_validate({"secret": "short"})
    with pytest.raises(ValueError, match="redis://"):
        ClusterConfig.model_validate({"redis": "http://localhost"})
