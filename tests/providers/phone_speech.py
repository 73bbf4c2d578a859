"""Phone-band caller speech for recognition tests and bench/offline_stt.py: espeak-ng voices through sox to 8 kHz μ-law, and WER."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# (espeak-ng voice, words per minute): US and British English, female/male variants, several speeds.
VOICES = [
    ("en-us", 160),
    ("en-gb", 150),
    ("en-us+f3", 145),
    ("en-us+m3", 170),
    ("en-gb+f3", 140),
    ("en-us+m7", 155),
]

# What callers of a front desk say: names, dates, times, numbers. Written as words so espeak-ng's reading
# is predictable; `normalize` puts a recognizer's digits ("3:30 p.m.") into the same words.
SENTENCES = [
    "my name is maria garcia",
    "i would like to book an appointment for tuesday",
    "tuesday at three p m",
    "can i come in on the twenty third",
    "three thirty in the afternoon works for me",
    "my phone number is five five five one two three four",
    "this is john smith calling about my booking",
    "what are your opening hours on saturday",
    "i need to cancel my appointment on friday",
    "could you move it to wednesday morning",
    "is ten o'clock free tomorrow",
    "my name is david chen",
    "the appointment is for two people",
    "i will be there at half past four",
    "where are you located",
    "please call me back this afternoon",
    "my date of birth is march the fourth",
    "thank you very much goodbye",
    "i would like the first of december",
    "can you book me for monday at nine a m",
    "my name is sarah johnson",
    "the reference number is four seven two nine",
    "do you have anything next thursday",
    "i am running about fifteen minutes late",
    "is there parking near your office",
    "i would like to speak to the manager",
    "eleven fifteen would be perfect",
    "can i pay by credit card",
    "we are a group of six",
    "please book it under the name robert brown",
    "i will see you on the twelfth of january",
    "what time do you close today",
]


@dataclass(frozen=True)
class Clip:
    """One caller utterance: its words, the voice that said them, and 8 kHz μ-law audio."""

    text: str
    voice: str
    ulaw: bytes


def speak(text: str, voice: str, wpm: int) -> bytes:
    """espeak-ng → sox: 8 kHz μ-law raw bytes, the way a phone line carries the caller."""
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(wpm), text], capture_output=True, check=True
    ).stdout
    return subprocess.run(
        # -D: no dither. sox dithers by default with fresh random noise each run, which made the same
        # sentence a different clip every session (a G.711 encoder does not dither either).
        ["sox", "-D", "-t", "wav", "-", "-r", "8000", "-c", "1", "-e", "mu-law", "-t", "raw", "-"],
        input=wav,
        capture_output=True,
        check=True,
    ).stdout


def make_clips(directory: Path) -> list[Clip]:
    """Every sentence in one voice (round robin over VOICES), cached as files in `directory`."""

    def one(index: int) -> Clip:
        voice, wpm = VOICES[index % len(VOICES)]
        text = SENTENCES[index]
        path = directory / f"{index:02d}.ulaw"
        if not path.exists():
            path.write_bytes(speak(text, voice, wpm))
        return Clip(text, f"{voice} {wpm}wpm", path.read_bytes())

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(len(SENTENCES))))


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
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}  # fmt: skip


def _number(n: int) -> list[str]:
    if n < 20:
        return [_UNITS[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_UNITS[n % 10]] if n % 10 else [])
    return [_UNITS[int(d)] for d in str(n)]  # phone and reference numbers are read digit by digit


def _ordinal(n: int) -> list[str]:
    words = _number(n)
    last = words[-1]
    words[-1] = _ORDINAL.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return words


def normalize(text: str) -> list[str]:
    """Words for WER: lowercase, no punctuation, 'p.m.' → 'p m', digits and times spelled out."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"\b([ap])\.?\s?m\b\.?", r" \1 m ", text)
    text = re.sub(r"(\d{1,2}):00\b", r"\1", text)
    text = re.sub(r"(\d{1,2}):(\d{2})", r"\1 \2", text)
    text = re.sub(r"(?<=\d)[-,.](?=\d)", " ", text)
    text = re.sub(r"[^a-z0-9' ]", " ", text)
    out: list[str] = []
    for word in text.split():
        word = word.strip("'")
        m = re.fullmatch(r"(\d+)(st|nd|rd|th)?", word)
        if m:
            out += _ordinal(int(m.group(1))) if m.group(2) else _number(int(m.group(1)))
        elif word:
            out.append(word)
    return out


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, words in the reference), both normalized."""
    r, h = normalize(reference), normalize(hypothesis)
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[:], i
        for j, hw in enumerate(h, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (rw != hw))
    return row[-1], len(r)
