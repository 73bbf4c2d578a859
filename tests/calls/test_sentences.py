"""Reply text as speech: the sentence chunker and what of a cut-off reply the caller heard."""

from __future__ import annotations

from patterd.calls.sentences import Sentence, SentenceChunker, heard_texts


def test_chunker_splits_at_sentence_ends_and_long_clauses() -> None:
    chunker = SentenceChunker(min_chars=10, max_clause_chars=40)
    out: list[str] = []
    for token in [
        "Sure",
        "thing.",
        "We",
        "open",
        "at",
        "9.30",
        "on",
        "weekdays!",
        "Is",
        "that",
        "ok?",
        "Also,",
        "we",
        "have",
        "parking,",
        "a",
        "cafe,",
        "and",
        "a",
        "long",
        "corridor",
        "of",
        "shops,",
        "all",
        "on",
        "site",
    ]:
        out += chunker.push(token + " ")
    out += chunker.flush()
    assert out == [
        "Sure thing.",
        "We open at 9.30 on weekdays!",
        "Is that ok?",
        "Also, we have parking, a cafe, and a long corridor of shops,",
        "all on site",
    ]
    short = SentenceChunker(min_chars=12)
    assert short.push("Hi there. How are you? ") == ["Hi there. How are you?"]  # too short alone


def test_chunker_waits_for_what_follows_a_period_and_cuts_newlines() -> None:
    chunker = SentenceChunker(min_chars=5)
    assert chunker.push("It costs 3.") == []
    assert chunker.push("5 dollars. Next") == ["It costs 3.5 dollars."]
    assert chunker.push(" line\nmore") == ["Next line"]
    assert chunker.flush() == ["more"]


def test_heard_text_is_whole_sentences_plus_the_played_share() -> None:
    a, b = (
        Sentence("One two three four.", 0, 800 * 8),
        Sentence("Five six seven eight nine ten.", 0, 1000 * 8),
    )
    assert heard_texts([a, b], None) == ["One two three four.", "Five six seven eight nine ten."]
    assert heard_texts([a, b], 800 + 500) == ["One two three four.", "Five six seven"]
    assert heard_texts([a, b], 100) == ["", ""]
