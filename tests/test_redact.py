"""Redaction: phone-number modes with the install's keyed hash, numbers inside text, URL credentials."""

from __future__ import annotations

import hashlib
import hmac
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from patterd import hash_key
from patterd.redact import check_mode, redact_number, redact_numbers_in, redact_url, redact_urls

NUMBER = "+15551234567"


@pytest.fixture(autouse=True)
def process_key() -> Iterator[None]:
    """Each test starts on the per-process key and leaves it that way."""
    hash_key.use_root(None)
    yield
    hash_key.use_root(None)


def test_modes() -> None:
    assert redact_number(NUMBER, "full") == NUMBER
    assert redact_number(NUMBER, "mask") == "***4567"
    keyed = hmac.new(hash_key.current_key(), NUMBER.encode(), hashlib.sha256).hexdigest()[:16]
    assert redact_number(NUMBER, "hash_only") == "sha256:" + keyed
    # Not the bare SHA-256 anyone can recompute by enumerating an area code.
    assert redact_number(NUMBER, "hash_only") != "sha256:" + hashlib.sha256(NUMBER.encode()).hexdigest()[:16]


def test_empty_stays_empty() -> None:
    assert redact_number("", "mask") == "" and redact_number("", "hash_only") == ""


def test_check_mode() -> None:
    assert check_mode("mask") == "mask"
    with pytest.raises(ValueError, match="redact_phone is 'none'"):
        check_mode("none")


def _hash_in_new_process(root: Path) -> str:
    """hash_only of NUMBER computed by a fresh interpreter (a daemon restart) using `root`."""
    code = (
        "import sys; from pathlib import Path; from patterd import hash_key; from patterd.redact import redact_number;"
        f"hash_key.use_root(Path(sys.argv[1])); print(redact_number({NUMBER!r}, 'hash_only'))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(root)], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def test_the_key_lives_beside_the_records_and_survives_restarts(tmp_path: Path) -> None:
    root = tmp_path / "records"
    assert not (root / ".hash_key").exists()
    hash_key.use_root(root)
    here = redact_number(NUMBER, "hash_only")
    key_file = root / ".hash_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert here.startswith("sha256:") and len(here) == len("sha256:") + 16
    # A restart with the same root: the same hash. Another install (root): a different one.
    assert _hash_in_new_process(root) == here
    assert _hash_in_new_process(tmp_path / "other") != here
    assert [p.name for p in root.iterdir()] == [".hash_key"]  # no temporary files left behind


def test_no_file_is_made_until_a_number_is_hashed(tmp_path: Path) -> None:
    hash_key.use_root(tmp_path)
    redact_number(NUMBER, "mask")
    assert not (tmp_path / ".hash_key").exists()


def test_without_persistence_the_key_is_per_process(tmp_path: Path) -> None:
    here = redact_number(NUMBER, "hash_only")
    code = f"from patterd.redact import redact_number; print(redact_number({NUMBER!r}, 'hash_only'))"
    other = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert other.stdout.strip() != here and other.stdout.strip().startswith("sha256:")


def test_racing_creators_agree_on_one_key(tmp_path: Path) -> None:
    keys = {hash_key.load_or_create(tmp_path) for _ in range(3)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from patterd import hash_key;"
                "print(hash_key.load_or_create(Path(sys.argv[1])).hex())",
                str(tmp_path / "race"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = {p.communicate()[0].strip() for p in procs}
    assert len(keys) == 1 and len(outs) == 1


def test_an_unusable_key_file_falls_back_to_the_process_key(tmp_path: Path) -> None:
    process = hash_key.current_key()
    (tmp_path / ".hash_key").write_text("not hex\n")
    hash_key.use_root(tmp_path)
    assert hash_key.current_key() == process  # logged as a warning; records still get a keyed hash
    assert (tmp_path / ".hash_key").read_text() == "not hex\n"  # never overwritten: it may be a real key


def test_numbers_inside_text() -> None:
    text = "transferred to +15550009999 (from +442071838750); id 15550001234"
    assert redact_numbers_in(text, "full") == text
    assert redact_numbers_in(text, "mask") == "transferred to ***9999 (from ***8750); id 15550001234"


def test_url_credentials() -> None:
    assert (
        redact_url("https://user:pass@h.example.com:8443/a?api_key=abc&q=1&Token=x#f")
        == "https://***@h.example.com:8443/a?api_key=***&q=1&Token=***#f"
    )
    assert redact_url("https://h.example.com/a?q=a%20b") == "https://h.example.com/a?q=a%20b"
    assert redact_url("http://[::1/") == "***"  # unparseable: nothing of it is echoed
    assert redact_urls('GET http://u:p@h/x?sig=1 said "no"') == 'GET http://***@h/x?sig=*** said "no"'
