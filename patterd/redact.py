"""Phone-number redaction per the `redact_phone` setting (full, mask, hash_only): one rule for records and logs."""

from __future__ import annotations

import hashlib
from typing import Literal, get_args

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

    Empty stays empty (a browser softphone call has no caller number), so redaction never
    invents a value.
    """
    if not number or mode == "full":
        return number
    if mode == "mask":
        return "***" + number[-4:]
    if mode == "hash_only":
        return "sha256:" + hashlib.sha256(number.encode()).hexdigest()[:16]
    raise ValueError(f"redact_phone is {mode!r}; expected one of {', '.join(REDACT_MODES)}")
