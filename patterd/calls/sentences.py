"""Reply text as speech: streamed LLM text cut into speakable sentences, and what of them the caller heard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ULAW_BYTES_PER_MS = 8  # 8 kHz μ-law: one byte per sample
SENTENCE_ENDS = ".!?;:"
CLOSERS = "\"')]»”’"


class SentenceChunker:
    """Cuts streamed LLM text into speakable pieces: at . ! ? ; : and newlines, long clauses at commas."""

    def __init__(self, min_chars: int = 12, max_clause_chars: int = 80) -> None:
        self.min_chars = min_chars
        self.max_clause_chars = max_clause_chars
        self._buf = ""

    def push(self, text: str) -> list[str]:
        """Add text; return the pieces it completes."""
        self._buf += text
        out: list[str] = []
        while (cut := self._cut()) is not None:
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                out.append(piece)
        return out

    def flush(self) -> list[str]:
        """The rest of the text (the reply ended)."""
        piece, self._buf = self._buf.strip(), ""
        return [piece] if piece else []

    def _cut(self) -> int | None:
        buf = self._buf
        n = len(buf)
        last_space = -1
        for i, ch in enumerate(buf):
            if ch.isspace():
                last_space = i
            if ch == "\n":
                if buf[:i].strip():
                    return i + 1
                continue
            if ch not in SENTENCE_ENDS and ch != ",":
                continue
            # A sentence ends only where whitespace follows: "3.5" and "e.g." mid-word stay whole,
            # and a final "." waits for the next token to tell.
            j = i + 1
            while j < n and buf[j] in CLOSERS:
                j += 1
            if j >= n or not buf[j].isspace():
                continue
            length = len(buf[:j].strip())
            if ch == "," and length >= self.max_clause_chars:
                return j
            if ch != "," and length >= self.min_chars:
                return j
        if n > 2 * self.max_clause_chars and last_space > 0:
            return last_space  # no punctuation at all: do not hold speech back forever
        return None


@dataclass
class Sentence:
    """One speakable piece of a reply and how much of its audio has been queued."""

    text: str
    round: int
    audio_bytes: int = 0  # μ-law bytes queued for playout so far


def heard_texts(sentences: Sequence[Sentence], played_ms: float | None) -> list[str]:
    """Per sentence, the text the caller heard after `played_ms` of the reply (None: all of it)."""
    if played_ms is None:
        return [
            s.text if s.audio_bytes else "" for s in sentences
        ]  # a sentence the TTS failed was never heard
    out: list[str] = []
    elapsed = 0.0
    for s in sentences:
        duration = s.audio_bytes / ULAW_BYTES_PER_MS
        if duration <= 0 or elapsed >= played_ms:
            out.append("")
            continue
        if elapsed + duration <= played_ms:
            out.append(s.text)
        else:
            # Speech runs at a roughly even rate: the played share of the audio is that share of
            # the characters, cut back to a whole word.
            share = (played_ms - elapsed) / duration
            prefix = s.text[: int(len(s.text) * share)]
            if len(prefix) < len(s.text) and not s.text[len(prefix) : len(prefix) + 1].isspace():
                prefix = prefix.rsplit(" ", 1)[0] if " " in prefix else ""
            out.append(prefix.strip())
        elapsed += duration
    return out
