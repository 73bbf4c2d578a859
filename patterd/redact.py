"""Redaction: phone numbers per `redact_phone` (full, mask, hash_only), and credentials inside URLs."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from patterd import hash_key

SECRET_MASK = "**********"  # what a secret looks like wherever it is shown (logs, check, API)

RedactMode = Literal["full", "mask", "hash_only"]
REDACT_MODES: tuple[str, ...] = get_args(RedactMode)


def check_mode(mode: str) -> RedactMode:
    """Return `mode` if it is a redaction mode, else raise ValueError naming the choices."""
    if mode not in REDACT_MODES:
        raise ValueError(f"redact_phone is {mode!r}; expected one of {', '.join(REDACT_MODES)}")
    return mode  # type: ignore[return-value]


def redact_number(number: str, mode: RedactMode) -> str:
    """The number as stored on disk: full E.164, `***` + last 4 digits, or `sha256:` + 16 hex.

    The hash is HMAC-SHA256 with the install's key (`hash_key`): stable across restarts with
    the same persist root, not recomputable without the key. Empty stays empty (a browser
    softphone call has no caller number), so redaction never invents a value.
    """
    if not number or mode == "full":
        return number
    if mode == "mask":
        return "***" + number[-4:]
    if mode == "hash_only":
        digest = hmac.new(hash_key.current_key(), number.encode(), hashlib.sha256).hexdigest()
        return "sha256:" + digest[:16]
    raise ValueError(f"redact_phone is {mode!r}; expected one of {', '.join(REDACT_MODES)}")


# An E.164 number inside free text: + then 7..15 digits, not glued to other word characters.
E164_IN_TEXT = re.compile(r"(?<![\w+])\+[1-9]\d{6,14}(?!\d)")


def redact_numbers_in(text: str, mode: RedactMode) -> str:
    """Free text (a reason, an error, a tool result) with every E.164 number in it redacted."""
    if mode == "full" or "+" not in text:
        return text
    return E164_IN_TEXT.sub(lambda m: redact_number(m.group(0), mode), text)


def redact_numbers_deep(value: Any, mode: RedactMode) -> Any:
    """`redact_numbers_in` over every string inside JSON-like data (dicts, lists); keys stay as they are."""
    if mode == "full":
        return value
    if isinstance(value, str):
        return redact_numbers_in(value, mode)
    if isinstance(value, dict):
        return {k: redact_numbers_deep(v, mode) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_numbers_deep(v, mode) for v in value]
    return value


URL_MASK = "***"  # what a credential inside a URL becomes (userinfo, secret query values)
# Query parameter names that carry credentials (matched case-insensitively, as substrings):
# api_key, apikey, access_token, token, secret, client_secret, password, sig, signature, auth, ...
_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|auth|sig|credential|session|jwt|code", re.I)
# A URL inside free text (an error message, a log line): scheme to the first blank or quote.
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """`url` fit to show: userinfo (`user:pass@`) and secret-looking query values become `***`.

    Anything that does not parse as a URL is returned masked whole rather than echoed.
    Secrets in the path (some services put a token there) cannot be told apart: keep them in
    headers, which are never shown.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = URL_MASK + "@" + netloc.rpartition("@")[2]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_SECRET_PARAM.search(name) for name, _ in pairs):
                query = "&".join(
                    f"{quote(name, safe='')}={URL_MASK if _SECRET_PARAM.search(name) else quote(value, safe='')}"
                    for name, value in pairs
                )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # e.g. an invalid IPv6 host: show nothing of it
        return URL_MASK


def redact_urls(text: str) -> str:
    """Free text with every URL in it passed through `redact_url`."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def redact_call_data(data: dict[str, Any], mode: RedactMode) -> dict[str, Any]:
    """A call event's data as shown on the live feed: its numbers and numbers inside its text redacted."""
    for key in ("caller", "callee", "to"):
        value = data.get(key)
        if isinstance(value, str) and value:
            data[key] = redact_number(value, mode)
    # ... and numbers inside text: a transfer's call.ended reason, tool arguments, error messages.
    redacted: dict[str, Any] = redact_numbers_deep(data, mode)
    return redacted
