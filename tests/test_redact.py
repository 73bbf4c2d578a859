"""Phone-number redaction modes."""

from __future__ import annotations

import hashlib

import pytest

from patterd.redact import check_mode, redact_number


def test_modes() -> None:
    number = "+15551234567"
    assert redact_number(number, "full") == number
    assert redact_number(number, "mask") == "***4567"
    assert redact_number(number, "hash_only") == "sha256:" + hashlib.sha256(number.encode()).hexdigest()[:16]
    assert len(redact_number(number, "hash_only")) == len("sha256:") + 16


def test_empty_stays_empty() -> None:
    assert redact_number("", "mask") == "" and redact_number("", "hash_only") == ""


def test_check_mode() -> None:
    assert check_mode("mask") == "mask"
    with pytest.raises(ValueError, match="redact_phone is 'none'"):
        check_mode("none")
