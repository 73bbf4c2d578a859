"""Vonage's JWTs against the official SDK: our application token vs vonage-jwt's, webhook tokens both ways."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from vonage_jwt import JwtClient, verify_signature  # type: ignore[import-untyped]

from patterd.providers import vonage_jwt
from tests.fakes.vonage_rest import rsa_key_pair

PRIVATE, PUBLIC = rsa_key_pair()
SECRET = "a-signature-secret-of-the-account-0123456789"
BODY = b'{"uuid": "u-1", "from": "15551112222", "to": "15550001234"}'


def test_application_token_has_the_sdks_header_and_claims() -> None:
    ours = vonage_jwt.application_token("app-1", PRIVATE, now=1_800_000_000)
    sdk = JwtClient("app-1", PRIVATE).generate_application_jwt({"iat": 1_800_000_000}).decode()
    assert jwt.get_unverified_header(ours) == jwt.get_unverified_header(sdk) == {"alg": "RS256", "typ": "JWT"}
    mine = jwt.decode(ours, PUBLIC, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    theirs = jwt.decode(sdk, PUBLIC, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert set(mine) == set(theirs) == {"application_id", "iat", "jti", "exp"}
    assert {k: mine[k] for k in ("application_id", "iat", "exp")} == {
        k: theirs[k] for k in ("application_id", "iat", "exp")
    }
    assert mine["jti"] != vonage_jwt.application_token("app-1", PRIVATE, now=1_800_000_000)  # one per token


def test_webhook_tokens_verify_both_ways_with_the_sdk() -> None:
    token = vonage_jwt.sign_webhook(SECRET, BODY, {"application_id": "app-1"})
    assert verify_signature(token, SECRET) is True  # the SDK accepts what we (and the fake) sign
    assert verify_signature(token, SECRET + "x") is False
    sdk_signed = jwt.encode(
        {
            "iat": int(time.time()),
            "jti": "j",
            "iss": "Vonage",
            "payload_hash": hashlib.sha256(BODY).hexdigest(),
        },
        SECRET,
        algorithm="HS256",
    )
    assert verify_signature(sdk_signed, SECRET) is True
    claims = vonage_jwt.verify_webhook(sdk_signed, SECRET, BODY)
    assert claims is not None and claims["iss"] == "Vonage"


def test_webhook_tokens_are_refused_for_another_body_secret_age_or_algorithm() -> None:
    now = time.time()
    good = vonage_jwt.sign_webhook(SECRET, BODY)
    assert vonage_jwt.verify_webhook(good, SECRET, BODY, now=now) is not None
    assert vonage_jwt.verify_webhook(good, SECRET, BODY + b" ", now=now) is None  # payload_hash
    assert vonage_jwt.verify_webhook(good, "another-secret-of-enough-length-000000", BODY, now=now) is None
    assert vonage_jwt.verify_webhook(good, SECRET, BODY, now=now + 3600) is None  # too old
    assert vonage_jwt.verify_webhook(good, SECRET, BODY, now=now - 3600) is None  # from the future
    assert vonage_jwt.verify_webhook(None, SECRET, BODY) is None
    assert vonage_jwt.verify_webhook("not.a.jwt", SECRET, BODY) is None
    unhashed = jwt.encode({"iat": int(now)}, SECRET, algorithm="HS256")
    assert vonage_jwt.verify_webhook(unhashed, SECRET, BODY, now=now) is None  # a body needs its hash
    assert vonage_jwt.verify_webhook(unhashed, SECRET, b"", now=now) is not None
    rs = jwt.encode(
        {"iat": int(now), "payload_hash": hashlib.sha256(BODY).hexdigest()}, PRIVATE, algorithm="RS256"
    )
    assert vonage_jwt.verify_webhook(rs, SECRET, BODY, now=now) is None
    claims = {"iat": int(now), "payload_hash": hashlib.sha256(BODY).hexdigest()}
    none_alg = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    assert vonage_jwt.verify_webhook(none_alg, SECRET, BODY, now=now) is None


def test_without_pyjwt_the_config_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from patterd.providers.vonage import Options

    monkeypatch.setitem(sys.modules, "jwt", None)  # import jwt → ImportError, as when it is not installed
    with pytest.raises(ValueError, match=r"PyJWT with cryptography: pip install 'patterd\[vonage\]'"):
        Options(application_id="a", private_key="k.pem", signature_secret="s")
    with pytest.raises(vonage_jwt.VonageJwtUnavailable):
        vonage_jwt.application_token("a", PRIVATE)


def test_bearer_header() -> None:
    assert vonage_jwt.bearer("Bearer abc.def.ghi") == "abc.def.ghi"
    assert vonage_jwt.bearer("bearer  abc") == "abc"
    assert (
        vonage_jwt.bearer("Basic abc") is None
        and vonage_jwt.bearer("") is None
        and vonage_jwt.bearer(None) is None
    )


def test_private_key_as_pem_escaped_pem_or_path(tmp_path: Path) -> None:
    assert vonage_jwt.load_private_key(PRIVATE) == PRIVATE
    assert vonage_jwt.load_private_key(PRIVATE.replace("\n", "\\n")) == PRIVATE  # one env var line
    (tmp_path / "app.key").write_text(PRIVATE)
    assert vonage_jwt.load_private_key("app.key", tmp_path) == PRIVATE
    assert vonage_jwt.load_private_key(str(tmp_path / "app.key")) == PRIVATE
    vonage_jwt.check_private_key(PRIVATE)
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not an RSA key"):
        vonage_jwt.check_private_key(ec_key.decode())
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        vonage_jwt.check_private_key(PUBLIC)
