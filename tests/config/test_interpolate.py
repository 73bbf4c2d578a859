"""`${VAR}` interpolation and `.env` parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from patterd.config.interpolate import (
    DotenvLine,
    MissingVariable,
    interpolate,
    interpolate_lenient,
    load_dotenv,
    merge_environ,
    parse_dotenv,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "alpha"),
        ("x-${A}-y", "x-alpha-y"),
        ("${B:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),  # like the shell's :-
        ("${A:-fallback}", "alpha"),
        ("${B:-}", ""),
        ("$$", "$"),
        ("$${A}", "${A}"),
        ("costs $5", "costs $5"),
        ("$A", "$A"),  # only the braced form is a reference
        ("${A}${A}", "alphaalpha"),
    ],
)
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "alpha", "EMPTY": ""}) == expected


def test_unset_without_default_names_the_variable() -> None:
    with pytest.raises(MissingVariable, match="environment variable NOPE is not set"):
        interpolate("${NOPE}", {})


def test_empty_but_set_variable_without_default_is_empty() -> None:
    assert interpolate("[${E}]", {"E": ""}) == "[]"


def test_lenient_leaves_unset_references() -> None:
    assert interpolate_lenient("a: ${A}\nb: ${B}\nc: $$\n", {"A": "1"}) == "a: 1\nb: ${B}\nc: $\n"


def test_parse_dotenv_forms() -> None:
    errors: list[DotenvLine] = []
    text = "\n".join(
        [
            "# comment",
            "",
            "PLAIN=value",
            "export EXPORTED=yes",
            "SPACED = padded   ",
            "INLINE=value # comment",
            "HASH=a#b",
            "SINGLE='lit $x \\n # not a comment'",
            'DOUBLE="line\\nnext \\"q\\""',
            "EMPTY=",
            "not a line",
            "1BAD=x",
            'OPEN="unterminated',
        ]
    )
    values = parse_dotenv(text, errors.append)
    assert values == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "padded",
        "INLINE": "value",
        "HASH": "a#b",
        "SINGLE": "lit $x \\n # not a comment",
        "DOUBLE": 'line\nnext "q"',
        "EMPTY": "",
    }
    assert [e.line for e in errors] == [11, 12, 13]
    assert "unterminated double quote" in errors[2].message


def test_load_dotenv_missing_file_is_empty(tmp_path: Path) -> None:
    assert load_dotenv(tmp_path / ".env") == ({}, [])


def test_load_dotenv_reports_lines_by_file_name(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("A=1\noops\n")
    values, issues = load_dotenv(tmp_path / ".env")
    assert values == {"A": "1"}
    assert [str(i) for i in issues] == [".env (line 2): expected KEY=VALUE, got 'oops'"]


def test_environment_wins_over_dotenv() -> None:
    assert merge_environ({"A": "env"}, {"A": "dotenv", "B": "dotenv"}) == {"A": "env", "B": "dotenv"}
