"""`llm.script` text matching: normalization, fuzzy example similarity, and {placeholder} filling of replies.

Caller text comes from speech recognition, so matching works on normalized tokens with light stemming
and fuzzy token equality (see `script_llm`).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from typing import Any

# ------------------------------------------------------------------ text normalization

_CONTRACTIONS = {
    "what's": "what is",
    "whats": "what is",
    "it's": "it is",
    "i'm": "i am",
    "i'd": "i would",
    "you're": "you are",
    "where's": "where is",
    "when's": "when is",
    "don't": "do not",
    "can't": "can not",
    "cannot": "can not",
    "that's": "that is",
    "i'll": "i will",
    "let's": "let us",
}
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "you",
        "your",
        "we",
        "our",
        "me",
        "my",
        "is",
        "are",
        "am",
        "be",
        "to",
        "of",
        "for",
        "on",
        "in",
        "at",
        "do",
        "does",
        "can",
        "could",
        "would",
        "will",
        "please",
        "like",
        "want",
        "and",
        "or",
        "it",
        "this",
        "that",
        "there",
        "hi",
        "uh",
        "um",
        "er",
        "so",
        "just",
    ]
)


def normalize(text: str) -> str:
    """Lowercase, contractions expanded, punctuation dropped (except : in times), spaces collapsed."""
    text = text.lower().replace("’", "'")
    words = [_CONTRACTIONS.get(w, w) for w in text.split()]
    text = " ".join(words)
    text = re.sub(r"[^a-z0-9:+' -]", " ", text)
    text = text.replace("'", "")
    return " ".join(text.split())


def _stem(token: str) -> str:
    for suffix in ("ing", "es", "s", "ed"):
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)]
    return token


@functools.lru_cache(maxsize=65536)  # a vocabulary's token pairs recur every turn; difflib is the cost
def _same(a: str, b: str) -> bool:
    """Token equality tolerant of recognition errors: equal stems or very similar spellings."""
    if a == b or _stem(a) == _stem(b):
        return True
    return min(len(a), len(b)) >= 4 and difflib.SequenceMatcher(None, a, b).ratio() >= 0.8


_QUESTION_WORDS = frozenset(["what", "where", "when", "how", "who", "which", "why"])


def _weight(token: str) -> float:
    if token in _STOPWORDS:
        return 0.25
    return 0.5 if token in _QUESTION_WORDS else 1.0


def similarity(utterance: str, example: str) -> float:
    """0..1: how well `utterance` expresses `example` (recall of the example's words counts double)."""
    u, e = utterance.split(), _example_tokens(example)
    if not u or not e:
        return 0.0
    recall = sum(_weight(t) for t in e if any(_same(t, x) for x in u)) / sum(_weight(t) for t in e)
    precision = sum(_weight(t) for t in u if any(_same(t, x) for x in e)) / sum(_weight(t) for t in u)
    return (2 * recall + precision) / 3


@functools.lru_cache(maxsize=4096)
def _example_tokens(example: str) -> list[str]:
    """The normalized words of a configured example (a handful per intent, matched every turn)."""
    return normalize(example).split()


# ------------------------------------------------------------------ templates


class _Placeholders(dict[str, str]):
    """format_map mapping that leaves unknown {placeholders} as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with {name} placeholders replaced; unknown ones stay verbatim."""
    try:
        return template.format_map(_Placeholders(values))
    except (ValueError, IndexError, AttributeError):  # stray braces in a reply: say it as written
        return template


def fill_args(value: Any, values: Mapping[str, str]) -> Any:
    """`value` (tool arguments: str, dict, list) with every string filled."""
    if isinstance(value, str):
        return fill(value, values)
    if isinstance(value, dict):
        return {k: fill_args(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_args(v, values) for v in value]
    return value
