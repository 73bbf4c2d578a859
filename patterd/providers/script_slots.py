"""Slot values for `llm.script` from normalized caller text: names, dates, times, phone numbers, numbers.

The text comes from speech recognition: a grammar recognizer's words ("three thirty p m") or an
open-vocabulary recognizer's written form ("Maria Garcia", "Tuesday at 3 p.m.", "the 23rd", "3:30"),
both after `script_text.normalize` (lowercase, no punctuation but `:` and `-`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

SlotType = Literal["name", "date", "time", "phone", "text", "number"]

_UNITS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_NUMBER_WORDS = {w: i for i, w in enumerate(_UNITS)}
_NUMBER_WORDS.update({"oh": 0, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50})
_ORDINAL_WORDS = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
]
_ORDINALS = {w: i + 1 for i, w in enumerate(_ORDINAL_WORDS)}
_ORDINALS.update({"thirtieth": 30})
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_FILLERS = frozenset(
    [
        "yes",
        "yeah",
        "yep",
        "sure",
        "ok",
        "okay",
        "well",
        "uh",
        "um",
        "er",
        "oh",
        "hi",
        "hello",
        "so",
        "its",
        "it",
        "is",
        "this",
        "name",
        "my",
        "the",
    ]
)
# Words that end a name ("maria garcia and i would like ...", "for maria garcia on tuesday").
_NAME_STOPS = frozenset(
    [
        "and",
        "i",
        "on",
        "at",
        "for",
        "please",
        "calling",
        "to",
        "from",
        "who",
        "with",
        "about",
        "tomorrow",
        "today",
        "next",
        "this",
        "that",
        *_WEEKDAYS,
        *_MONTHS,
    ]
)
_NAME_CUE = re.compile(
    r"\b(?:name is|name s|this is|it is|i am|call me|im|under the name|under|"
    r"(?:appointment|booking|reservation|visit) for)\s+([a-z][a-z' -]*)"
)


def _words(text: str) -> list[str]:
    return text.replace("-", " ").split()


def _words_to_number(words: list[str]) -> int | None:
    """'twenty three' → 23, 'twenty third' → 23, '4' → 4, 'third' → 3, '23rd' → 23."""
    total, seen = 0, False
    for i, w in enumerate(words):
        w = re.sub(r"(st|nd|rd|th)$", "", w) if re.fullmatch(r"\d+(st|nd|rd|th)", w) else w
        if seen and (total % 10 != 0 or total < 20 or w.isdigit() or w in _TENS):
            break  # 'three thirty' is two numbers; only 'twenty' + 'three' / 'third' add up
        if w.isdigit():
            total, seen = total + int(w), True
        elif w in _NUMBER_WORDS:
            total, seen = total + _NUMBER_WORDS[w], True
        elif w in _ORDINALS:
            total, seen = total + _ORDINALS[w], True
        elif w == "and" and seen and i + 1 < len(words):
            continue
        else:
            break
    return total if seen else None


def extract_name(text: str, *, bare: bool) -> str | None:
    """'my name is john smith' / 'it's john' / 'appointment for maria garcia on tuesday' → 'John Smith'; a bare name when `bare`."""
    m = _NAME_CUE.search(text)
    words = m.group(1).split() if m else (text.split() if bare else [])
    if m is None and bare:
        words = [w for w in words if w not in _FILLERS]
    kept: list[str] = []
    for w in words:
        if w in _NAME_STOPS or w.isdigit():
            break
        if w not in _FILLERS:
            kept.append(w)
    kept = kept[:3]
    if not kept:
        return None
    return " ".join(w.capitalize() for w in kept)


def _day_of_month(words: list[str]) -> int | None:
    """'the twenty third' / 'the 23rd' / '23rd': a day of the month said on its own (ordinals only)."""
    for i, w in enumerate(words):
        ordinal = re.fullmatch(r"(\d{1,2})(st|nd|rd|th)", w)
        if ordinal:
            return int(ordinal.group(1))
        if w == "the" and i + 1 < len(words):
            tail = words[i + 1 : i + 3]
            if any(t in _ORDINALS or t == "thirtieth" for t in tail[:2]):
                return _words_to_number(tail)
    return None


def _next_date(today: datetime, day: int) -> datetime | None:
    """The next date (today included) whose day of the month is `day`."""
    for months_ahead in range(3):
        month = (today.month - 1 + months_ahead) % 12 + 1
        year = today.year + (today.month - 1 + months_ahead) // 12
        try:
            candidate = datetime(year, month, day)
        except ValueError:
            continue  # no 31st this month
        if candidate.date() >= today.date():
            return candidate
    return None


def extract_date(text: str, today: datetime) -> str | None:
    """Weekday names, today/tomorrow (as weekday names), 'march 3', '3rd of march', 'the twenty third', ISO dates."""
    m = re.search(r"\b(\d{4})-(\d{2})-(\d{2})\b", text)
    if m:
        try:
            day = datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return None
        return f"{_WEEKDAYS[day.weekday()].capitalize()}, {_MONTHS[day.month - 1].capitalize()} {day.day}, {day.year}"
    words = _words(text)
    for i, w in enumerate(words):
        if w in _MONTHS:
            after = _words_to_number([x for x in words[i + 1 : i + 4] if x != "the"][:2])
            before = _words_to_number(words[max(0, i - 3) : i][-2:]) if i >= 1 else None
            if before is None and i >= 2 and words[i - 1] == "of":
                before = _words_to_number(words[max(0, i - 3) : i - 1][-2:])
            n = after if after is not None else before
            if n is not None and 1 <= n <= 31:
                return f"{w.capitalize()} {n}"
    for w in words:
        for day_name in _WEEKDAYS:
            if w == day_name or w == day_name + "s":
                return day_name.capitalize()
    if "day after tomorrow" in text:
        return _WEEKDAYS[(today + timedelta(days=2)).weekday()].capitalize()
    if "tomorrow" in words:
        return _WEEKDAYS[(today + timedelta(days=1)).weekday()].capitalize()
    if "today" in words:
        return _WEEKDAYS[today.weekday()].capitalize()
    n = _day_of_month(words)
    if n is not None and 1 <= n <= 31:
        date = _next_date(today, n)
        if date is not None:
            return f"{_MONTHS[date.month - 1].capitalize()} {date.day}"
    return None


_HALF = r"(o clock|oclock|am|pm|a m|p m|in the morning|in the afternoon|in the evening)"


def _clock(hour: int, minute: int, half: str) -> str | None:
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        return None
    if not half:
        if hour > 12:
            hour, half = hour - 12, "pm"
        elif hour == 0:
            hour, half = 12, "am"
    clock = f"{hour}:{minute:02d}" if minute else f"{hour}"
    return f"{clock} {half.upper()}".strip() if half else (clock if minute else f"{clock} o'clock")


def _bare_time(words: list[str]) -> tuple[int, int] | None:
    """'three thirty' / 'at 4' / 'half past four' / 'quarter past ten' → (hour, minute)."""
    text = " ".join(words)
    past = re.search(r"\b(half|quarter) past ([a-z0-9]+)\b", text)
    if past:
        hour = _words_to_number([past.group(2)])
        return (hour, 30 if past.group(1) == "half" else 15) if hour is not None else None
    start = words.index("at") + 1 if "at" in words else 0
    for i in range(start, len(words)):
        hour = _words_to_number(words[i : i + 1])
        if hour is not None and 1 <= hour <= 12:
            minute = _words_to_number(words[i + 1 : i + 3]) or 0
            return hour, minute
    return None


def extract_time(text: str, *, pending: bool = False) -> str | None:
    """'3 pm', 'three thirty pm', '3:30 p m', '15:30', 'noon' → '3 PM', '3:30 PM', '3:30 PM', '3:30 PM', '12 PM'.

    When the time was asked for, a bare 'three thirty' or 'at four' is one too ('3:30', "4 o'clock").
    """
    text = text.replace("-", " ")
    if re.search(r"\bnoon\b|\bmidday\b", text):
        return "12 PM"
    if re.search(r"\bmidnight\b", text):
        return "12 AM"
    m = re.search(r"\b(\d{1,2}):(\d{2})\s*(am|pm|a m|p m)?\b", text)
    if m:
        return _clock(int(m.group(1)), int(m.group(2)), (m.group(3) or "").replace(" ", ""))
    m = re.search(r"\b((?:\d{1,2}|[a-z]+)(?:\s+(?:\d{2}|[a-z]+)){0,2}?)\s*" + _HALF + r"\b", text)
    if m:
        parts = m.group(1).split()[-3:]
        for skip in range(len(parts)):  # 'at three thirty pm': the longest tail that is a time
            hour = _words_to_number(parts[skip : skip + 1])
            if hour is not None:
                minute = _words_to_number(parts[skip + 1 :]) if len(parts) > skip + 1 else 0
                suffix = m.group(2).replace(" ", "")
                half = {"inthemorning": "am", "intheafternoon": "pm", "intheevening": "pm"}.get(
                    suffix, suffix
                )
                return _clock(hour, minute or 0, "" if half == "oclock" else half)
        return None
    if pending:
        bare = _bare_time(_words(text))
        if bare is not None:
            return _clock(bare[0], bare[1], "")
    return None


def extract_phone(text: str) -> str | None:
    """Spoken or typed digits → '+15551234567' (10 digits get +1; 8-15 digits get +)."""
    digits = ""
    for w in text.replace("-", " ").split():
        if w.lstrip("+").isdigit():
            digits += w.lstrip("+")
        elif w in _NUMBER_WORDS and _NUMBER_WORDS[w] < 10:
            digits += str(_NUMBER_WORDS[w])
    if len(digits) == 10:
        return "+1" + digits
    if len(digits) == 11 and digits.startswith("1"):
        return "+" + digits
    if 8 <= len(digits) <= 15:
        return "+" + digits
    return None


def extract_number(text: str) -> str | None:
    """The first number in the text, digits or words."""
    words = _words(text)
    for i in range(len(words)):
        n = _words_to_number(words[i:])
        if n is not None:
            return str(n)
    return None


def extract_slot(kind: SlotType, text: str, *, pending: bool, today: datetime) -> str | None:
    """A slot value from normalized text; free-form kinds (bare names, text) only when the slot was asked for."""
    if kind == "name":
        return extract_name(text, bare=pending)
    if kind == "date":
        return extract_date(text, today)
    if kind == "time":
        return extract_time(text, pending=pending)
    if kind == "phone":
        return extract_phone(text)
    if kind == "number":
        return extract_number(text) if pending else None
    return text if pending and text else None
