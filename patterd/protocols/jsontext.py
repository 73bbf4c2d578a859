"""Untrusted JSON and text from the outside world: parse without crashing, clean what cannot be stored."""

from __future__ import annotations

import json
import re
from typing import Any

# A JSON escape for a UTF-16 surrogate (\ud800-\udfff): the only way JSON text yields a str that cannot be
# encoded as UTF-8 (a lone half of a pair), which would make a record unwritable.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JSONError(ValueError):
    """The input is not JSON this daemon accepts: malformed, nested too deeply, or not a str/bytes."""


def loads(data: str | bytes | bytearray) -> Any:
    """`json.loads` for untrusted input: every failure is a `JSONError`, and strings come back clean.

    `json.loads` raises RecursionError on deep nesting (`[` * 200000) and UnicodeDecodeError on bad bytes;
    both would escape a handler that expects ValueError and turn one bad request into a 500 or a dead call.
    """
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        value = json.loads(text)
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):
            value = clean(value)
    except RecursionError:
        raise JSONError("JSON nested too deeply") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise JSONError(f"not valid JSON: {exc}") from None
    return value


def clean(value: Any) -> Any:
    """The same JSON value with every string made encodable (lone surrogates become U+FFFD)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(key): clean(item) for key, item in value.items()}
    return value


def clean_text(text: str) -> str:
    """`text` with lone UTF-16 surrogates replaced by U+FFFD, so it always encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A well-formed surrogate pair becomes its character; a lone half becomes U+FFFD.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
