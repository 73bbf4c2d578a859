"""Vonage's JWTs: the RS256 application token our REST calls carry, and the HS256 token signing its webhooks.

Followed: vonage-jwt 1.1.5 `jwt.py` (`JwtClient.generate_application_jwt`: claims `application_id`,
`iat` = now, `jti` = a uuid4, `exp` = iat + 15 min; header `{"alg": "RS256", "typ": "JWT"}`; the private
key as PEM text, or a path to a key file) and `verify_jwt.py` (`verify_signature`: HS256 with the
account's signature secret); Vonage's signed-webhooks guide: the request carries `Authorization: Bearer
<jwt>`, whose `payload_hash` claim is the hex SHA-256 of the request body (the SDK checks only the
signature; we also check the hash, so a signed token cannot be replayed with another body).

PyJWT (with `cryptography` for RS256) is the optional extra `patterd[vonage]`: imported lazily, so a
config that does not use Vonage never needs it, and one that does gets a clear error.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

TOKEN_LIFETIME_SECS = 15 * 60  # the SDK's default `exp`
# A signed webhook older than this is refused (Vonage signs each request as it sends it).
MAX_WEBHOOK_AGE_SECS = 5 * 60
CLOCK_SKEW_SECS = 60


class VonageJwtUnavailable(RuntimeError):
    """PyJWT (with cryptography) is not installed."""


def _jwt() -> ModuleType:
    try:
        import jwt
    except ImportError:
        raise VonageJwtUnavailable(
            "the Vonage carrier needs PyJWT with cryptography: pip install 'patterd[vonage]'"
        ) from None
    return jwt


def check_available() -> None:
    """Raise VonageJwtUnavailable unless PyJWT and cryptography (RS256) can be imported."""
    _jwt()
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise VonageJwtUnavailable(
            "the Vonage carrier needs cryptography for RS256: pip install 'patterd[vonage]'"
        ) from None


def load_private_key(value: str, base: Path | None = None) -> str:
    """The PEM text of `value`: PEM as it is, else a path to the key file (relative to `base`)."""
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n")  # a key pasted into one env var line
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path.read_text(encoding="ascii")


def check_private_key(pem: str) -> None:
    """Raise ValueError unless `pem` is an RSA private key RS256 can sign with."""
    _jwt()
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"the Vonage private key is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("the Vonage private key is not an RSA key (Vonage signs with RS256)")


def application_token(application_id: str, private_key_pem: str, now: float | None = None) -> str:
    """An RS256 application JWT, with the SDK's claims (application_id, iat, jti, exp)."""
    iat = int(time.time() if now is None else now)
    claims = {
        "application_id": application_id,
        "iat": iat,
        "jti": str(uuid.uuid4()),
        "exp": iat + TOKEN_LIFETIME_SECS,
    }
    token: str = _jwt().encode(claims, private_key_pem, algorithm="RS256", headers={"typ": "JWT"})
    return token


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def verify_webhook(
    token: str | None, signature_secret: str, body: bytes, now: float | None = None
) -> dict[str, Any] | None:
    """The claims of a validly signed webhook token for this `body`, else None.

    HS256 with the signature secret; `iat` not in the future nor older than MAX_WEBHOOK_AGE_SECS;
    `payload_hash` (when the body is not empty, required) equal to the body's SHA-256.
    """
    if not token:
        return None
    jwt = _jwt()
    try:
        with (
            warnings.catch_warnings()
        ):  # the secret's length is the account's, not ours to warn about per request
            warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
            claims: dict[str, Any] = jwt.decode(
                token,
                signature_secret,
                algorithms=["HS256"],
                options={"require": ["iat"], "verify_iat": False},
                leeway=CLOCK_SKEW_SECS,
            )
    except jwt.PyJWTError:
        return None
    issued = claims.get("iat")
    current = time.time() if now is None else now
    if not isinstance(issued, int | float) or not (
        current - MAX_WEBHOOK_AGE_SECS <= issued <= current + CLOCK_SKEW_SECS
    ):
        return None
    claimed = claims.get("payload_hash")
    if body or claimed is not None:
        digest = hashlib.sha256(body).hexdigest()
        if not isinstance(claimed, str) or not hmac.compare_digest(digest, claimed.lower()):
            return None
    return claims


def sign_webhook(signature_secret: str, body: bytes, claims: dict[str, Any] | None = None) -> str:
    """An HS256 webhook token for `body` as Vonage signs one (for tests and fakes)."""
    payload = {
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "payload_hash": hashlib.sha256(body).hexdigest(),
        **(claims or {}),
    }
    token: str = _jwt().encode(payload, signature_secret, algorithm="HS256")
    return token
