"""Plivo's X-Plivo-Signature-V3 webhook signature: the signed string, signing and constant-time checking.

Followed: plivo-python 4.63 `plivo/utils/signature_v3.py` (`construct_get_url`, `construct_post_url`,
`get_signature_v3`, `validate_v3_signature`): HMAC-SHA256 keyed with the auth token over
`<signed url>.<X-Plivo-Signature-V3-Nonce>`, base64; the header may hold several comma-separated
signatures. The signed URL is scheme://host/path, then for GET `?` and every query + form parameter as
`k=v` sorted and joined by `&`; for POST `?`, the URL's own query sorted (followed by `.` when there
are form parameters), then each form parameter as `kv` sorted by name (repeated names by value).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"

Params = Mapping[str, str] | Mapping[str, Sequence[str]] | Iterable[tuple[str, str]]
Method = Literal["GET", "POST"]


def _grouped(params: Params | None) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    if params is None:
        return grouped
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        grouped.setdefault(name, []).extend([value] if isinstance(value, str) else list(value))
    return grouped


def _query_string(params: Mapping[str, list[str]]) -> str:
    return "&".join("&".join(f"{name}={value}" for value in sorted(params[name])) for name in sorted(params))


def _params_string(params: Mapping[str, list[str]]) -> str:
    return "".join("".join(f"{name}{value}" for value in sorted(params[name])) for name in sorted(params))


def signed_url(method: Method, url: str, params: Params | None = None) -> str:
    """The string Plivo signs (before `.nonce`) for a request to `url` with form `params`."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = _grouped(parse_qsl(parts.query, keep_blank_values=True))
    form = _grouped(params)
    if method.upper() == "GET":
        merged = {**form, **query}  # the SDK's params.update(query): the URL's values win
        joined = _query_string(merged)
        return base + ("?" + joined if joined else "")
    joined = _query_string(query)
    signed = base
    if joined or form:
        signed += "?" + joined
    if joined and form:
        signed += "."
    return signed + _params_string(form)


def compute_signature(
    auth_token: str, method: Method, url: str, nonce: str, params: Params | None = None
) -> str:
    """base64(HMAC-SHA256(auth_token, signed_url + "." + nonce))."""
    message = f"{signed_url(method, url, params)}.{nonce}".encode()
    mac = hmac.new(auth_token.encode("utf-8"), message, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def validate_signature(
    auth_token: str,
    method: Method,
    url: str,
    params: Params | None,
    nonce: str | None,
    signature: str | None,
) -> bool:
    """Check an X-Plivo-Signature-V3 header (one or more signatures, comma-separated) in constant time."""
    if not signature or not nonce:
        return False
    expected = compute_signature(auth_token, method, url, nonce, params).encode("ascii")
    results = [
        hmac.compare_digest(expected, candidate.strip().encode("utf-8", "replace"))
        for candidate in signature.split(",")
    ]
    return any(results)
