"""Seeded generator of hostile request bodies: deep nesting, huge numbers, bad UTF-8, lone surrogates,
wrong types, truncation, odd form keys, wrong content types. None of them is a valid request."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=latin-1",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=zz",
    "application/octet-stream",
    "",
    "image/png",
]
ODD_TEXT = [
    "",
    " ",
    "\ud800",
    "\udfff",
    "\x00",
    "é",
    "😀",
    "\u202e",
    "%",
    "&",
    "=",
    "+",
    "%zz",
    "\\",
    '"',
    "'" * 3,
]


@dataclass(frozen=True)
class BadBody:
    """One hostile body and the content type it claims."""

    kind: str
    body: bytes
    content_type: str


def surrogate_json(value: object) -> bytes:
    """JSON text that keeps lone surrogates as `\\udXXX` escapes (what a hostile client sends)."""
    return json.dumps(value, ensure_ascii=True).encode("ascii")


class BadBodies:
    """Draws bad bodies of every kind from one seeded random generator (reproducible)."""

    def __init__(self, seed: int, *, structured: Callable[[random.Random], object] | None = None) -> None:
        self.rng = random.Random(seed)
        self._structured = structured or (lambda rng: self.any_value(3))
        self.kinds: list[Callable[[], BadBody]] = [
            self.deep,
            self.huge_number,
            self.bad_utf8,
            self.surrogates,
            self.wrong_types,
            self.truncated,
            self.odd_form,
            self.random_bytes,
            self.not_object,
        ]

    def draw(self) -> BadBody:
        return self.rng.choice(self.kinds)()

    def content_type(self, usual: str) -> str:
        return usual if self.rng.random() < 0.6 else self.rng.choice(CONTENT_TYPES)

    def any_value(self, depth: int) -> object:
        rng = self.rng
        choice = rng.randrange(9 if depth > 0 else 6)
        if choice == 0:
            return None
        if choice == 1:
            return rng.choice([True, False])
        if choice == 2:
            return rng.choice([0, -1, 2**64, 10**300, -(10**30), 1.5, 1e308])
        if choice == 3:
            return rng.choice(ODD_TEXT) * rng.randrange(1, 4)
        if choice == 4:
            return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 20)))
        if choice == 5:
            return rng.choice(["+15550001234", "not-a-number", "+0", "+" + "9" * 40])
        if choice == 6:
            return [self.any_value(depth - 1) for _ in range(rng.randrange(0, 4))]
        keys = ["to", "from", "agent", "variables", "data", "payload", "event_type", "CallSid", *ODD_TEXT]
        return {rng.choice(keys): self.any_value(depth - 1) for _ in range(rng.randrange(0, 5))}

    def deep(self) -> BadBody:
        # 30 000 levels fit the 64 KB limit (the parser must refuse them); the 200 000 (400 KB) are
        # refused by size first, and cost the most to send: one in twenty-one.
        depth = self.rng.choice([1_000, 30_000] * 10 + [200_000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        return BadBody(
            "deep", (opener * depth + "1" + closer * depth).encode(), self.content_type("application/json")
        )

    def huge_number(self) -> BadBody:
        number = self.rng.choice(
            ["9" * 5000, "1e999999", "-" + "1" * 60_000, "0." + "0" * 10_000 + "1", "1E-99999"]
        )
        key = self.rng.choice(["to", "machine_detection", "data", "x"])
        return BadBody(
            "huge_number", f'{{"{key}": {number}}}'.encode(), self.content_type("application/json")
        )

    def bad_utf8(self) -> BadBody:
        junk = bytes(
            self.rng.choice([0xFF, 0xFE, 0xC0, 0x80, 0xED, 0xA0]) for _ in range(self.rng.randrange(1, 8))
        )
        body = b'{"to": "' + junk + b'", "data": {"payload": "' + junk + b'"}}'
        return BadBody("bad_utf8", body, self.content_type("application/json"))

    def surrogates(self) -> BadBody:
        lone = self.rng.choice(["\ud800", "\udbff", "\udc00", "\udfff"])
        value = self.rng.choice(
            [
                {"to": lone},
                {"variables": {lone: lone}, "to": 5},
                {lone: "x"},
                {"data": {"event_type": lone, "payload": {"from": lone}}},
                [lone],
            ]
        )
        return BadBody("surrogates", surrogate_json(value), self.content_type("application/json"))

    def wrong_types(self) -> BadBody:
        value = self._structured(self.rng)
        return BadBody("wrong_types", surrogate_json(value), self.content_type("application/json"))

    def truncated(self) -> BadBody:
        text = surrogate_json({"to": "+15550001234", "variables": {"a": "b"}, "data": {"payload": {}}})
        return BadBody(
            "truncated", text[: self.rng.randrange(1, len(text) - 1)], self.content_type("application/json")
        )

    def odd_form(self) -> BadBody:
        pairs = []
        for _ in range(self.rng.randrange(1, 12)):
            key = self.rng.choice([*ODD_TEXT, "CallStatus", "RecordingUrl", "AnsweredBy", "From"])
            value = self.rng.choice(ODD_TEXT)
            raw = self.rng.random() < 0.3  # unescaped, as a broken client would send it
            if raw:
                pairs.append(f"{key}={value}")
            else:
                pairs.append(f"{quote(key, errors='surrogatepass')}={quote(value, errors='surrogatepass')}")
        body = "&".join(pairs).encode("utf-8", "surrogatepass")
        if self.rng.random() < 0.3:
            body += b"&%FF%FE=%ED%A0%80&&=&"
        return BadBody("odd_form", body, self.content_type("application/x-www-form-urlencoded"))

    def random_bytes(self) -> BadBody:
        body = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 300)))
        return BadBody("random_bytes", body, self.content_type("application/octet-stream"))

    def not_object(self) -> BadBody:
        body = self.rng.choice(
            [b"null", b"true", b"1", b'"to"', b"[]", b"[1,2]", b'[{"to": "+15550001234"}]', b"1e5"]
        )
        return BadBody("not_object", body, self.content_type("application/json"))
