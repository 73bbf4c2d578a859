"""Phrase lists of `stt.offline`: parsing `(a | b)` / `[optional]` phrases, and the JSGF grammar and ARPA bigram model made from them.

Followed: the ARPA n-gram format for `mode: phrases` and the JSGF grammar format (W3C JSpeech Grammar
Format: alternatives, `[optional]`, `/weight/`) as pocketsphinx's `-jsgf` reads it for `mode: grammar`.
"""

from __future__ import annotations

import collections
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_SENTENCES = 20000  # expansions of one phrase list, for the phrases LM
_TOKEN = re.compile(r"[a-z']+|[|()\[\]]|\S")


def words_of(phrase: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", phrase.lower()).split()


# A phrase parses to a list of alternatives, each a sequence of items: a word, or a nested group
# (`optional` when written in brackets).
@dataclass(frozen=True)
class Group:
    alternatives: tuple[tuple[str | Group, ...], ...]
    optional: bool = False


def parse_phrase(phrase: str) -> Group:
    """Parse one phrase: words, `a | b` alternatives, `( … )` groups and `[ … ]` optional parts."""
    tokens = [t for t in _TOKEN.findall(phrase.lower()) if t not in ',.!?;:-"']
    pos = 0

    def fail(why: str) -> ValueError:
        return ValueError(f"stt.offline phrase {phrase!r}: {why}")

    def alternatives(close: str | None) -> Group:
        nonlocal pos
        alts: list[tuple[str | Group, ...]] = []
        seq: list[str | Group] = []
        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if tok == "|":
                alts.append(tuple(seq))
                seq = []
            elif tok in ("(", "["):
                group = alternatives(")" if tok == "(" else "]")
                seq.append(Group(group.alternatives, optional=tok == "["))
            elif tok in (")", "]"):
                if tok != close:
                    raise fail(f"unexpected {tok!r}")
                alts.append(tuple(seq))
                return Group(tuple(alts))
            elif re.fullmatch(r"[a-z']+", tok):
                seq.append(tok)
            else:
                raise fail(f"unexpected {tok!r} (expected words, |, ( ), [ ])")
        if close is not None:
            raise fail(f"missing {close!r}")
        alts.append(tuple(seq))
        return Group(tuple(alts))

    group = alternatives(None)
    if not any(group.alternatives):
        raise fail("has no words")
    return group


def group_words(group: Group) -> set[str]:
    found: set[str] = set()
    for alt in group.alternatives:
        for item in alt:
            found |= group_words(item) if isinstance(item, Group) else {item}
    return found


def expand_phrase(group: Group, limit: int = MAX_SENTENCES) -> list[list[str]]:
    """Every word sequence a parsed phrase stands for (at most `limit`)."""

    def seqs(items: tuple[str | Group, ...]) -> list[list[str]]:
        out: list[list[str]] = [[]]
        for item in items:
            tails = expand_phrase(item, limit) if isinstance(item, Group) else [[item]]
            out = [head + tail for head in out for tail in tails][:limit]
        return out

    result: list[list[str]] = [[]] if group.optional else []
    for alt in group.alternatives:
        result += seqs(alt)
    return result[:limit]


def _jsgf_expansion(group: Group, known: set[str]) -> str:
    alts = []
    for alt in group.alternatives:
        parts = []
        for item in alt:
            if isinstance(item, Group):
                parts.append(_jsgf_expansion(item, known))
            elif item in known:
                parts.append(item)
        alts.append(" ".join(parts) or "<NULL>")
    body = " | ".join(alts)
    return f"[{body}]" if group.optional else f"({body})"


def phrases_jsgf(phrases: Sequence[str], known: set[str], out_of_grammar_weight: float) -> str:
    """A JSGF grammar: exactly one of `phrases`, or (weighted down) any sequence of their words."""
    unique = dict.fromkeys(_jsgf_expansion(parse_phrase(p), known) for p in phrases)
    whole = " | ".join(unique)
    lines = ["#JSGF V1.0;", "grammar patterd;", f"<phrase> = {whole};"]
    if out_of_grammar_weight > 0:
        lines.append(f"<word> = {' | '.join(sorted(known))};")
        lines.append(f"public <utterance> = /1/ <phrase> | /{out_of_grammar_weight:g}/ <word>+;")
    else:
        lines.append("public <utterance> = <phrase>;")
    return "\n".join(lines) + "\n"


def phrases_arpa(phrases: Sequence[str]) -> str:
    """A bigram ARPA model of `phrases` (absolute discounting, backoff to add-one unigrams)."""
    sentences = [["<s>", *words_of(p), "</s>"] for p in phrases if words_of(p)]
    unigrams: collections.Counter[str] = collections.Counter()
    bigrams: collections.Counter[tuple[str, str]] = collections.Counter()
    for s in sentences:
        unigrams.update(s)
        bigrams.update(itertools.pairwise(s))
    discount = 0.5
    words = sorted(unigrams)
    total = sum(c for w, c in unigrams.items() if w != "<s>")
    followers = collections.Counter(a for a, _ in bigrams)
    lines = ["\\data\\", f"ngram 1={len(words)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    for w in words:
        logp = -99.0 if w == "<s>" else math.log10((unigrams[w] + 1) / (total + len(words)))
        backoff = math.log10(discount * followers[w] / unigrams[w]) if followers[w] else 0.0
        lines.append(f"{logp:.4f} {w} {backoff:.4f}")
    lines += ["", "\\2-grams:"]
    for (a, b), c in sorted(bigrams.items()):
        lines.append(f"{math.log10((c - discount) / unigrams[a]):.4f} {a} {b}")
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)
