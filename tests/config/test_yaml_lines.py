"""YAML reading: values, line numbers, duplicates, merge keys, syntax errors."""

from __future__ import annotations

from patterd.config.yaml_lines import format_path, lookup, parse_yaml


def test_values_and_lines() -> None:
    doc = parse_yaml("a: 1\nb:\n  - x: yes\n    y: no\n  - z\n")
    assert doc.value == {"a": 1, "b": [{"x": "yes", "y": "no"}, "z"]}  # YAML 1.2 booleans only
    assert doc.lines[("a",)] == 1
    assert doc.lines[("b", 0)] == 3
    assert doc.lines[("b", 0, "y")] == 4
    assert doc.lines[("b", 1)] == 5
    assert doc.line(("b", 0, "missing")) == 3  # a missing key points at its parent mapping
    assert not doc.issues


def test_numbers_mean_what_they_say() -> None:
    doc = parse_yaml("octal: 010\nsexagesimal: 1:20\nhex: 0x1F\nint: -42\nbool: true\nnull: ~\n")
    assert doc.value == {
        "octal": "010",
        "sexagesimal": "1:20",
        "hex": 31,
        "int": -42,
        "bool": True,
        "null": None,
    }


def test_duplicate_keys_are_issues_with_both_lines() -> None:
    doc = parse_yaml("a: 1\nb: 2\na: 3\n")
    assert [str(i) for i in doc.issues] == ["a (line 3): duplicate key (first defined on line 1)"]
    assert doc.value == {"a": 3, "b": 2}


def test_merge_keys_may_be_overridden_without_duplicate_issues() -> None:
    doc = parse_yaml("base: &b {k: 1, j: 0}\nm:\n  <<: *b\n  j: 2\n")
    assert doc.value["m"] == {"k": 1, "j": 2}
    assert not doc.issues
    assert doc.lines[("m", "j")] == 4


def test_syntax_error_reports_line_and_column() -> None:
    doc = parse_yaml("a:\n  b: [1, 2\n  c: 3\n")
    assert doc.syntax_error
    (issue,) = doc.issues
    assert issue.line == 3
    assert "column" in issue.message and "started on line 2" in issue.message


def test_multiple_documents_are_a_syntax_error() -> None:
    doc = parse_yaml("a: 1\n---\nb: 2\n")
    assert doc.syntax_error
    assert "single document" in doc.issues[0].message


def test_recursive_alias_is_an_issue_not_a_crash() -> None:
    doc = parse_yaml("a: &x\n  - *x\n")
    assert any("recursive" in i.message for i in doc.issues)


def test_non_scalar_keys_are_issues() -> None:
    doc = parse_yaml("? [a, b]\n: 1\n")
    assert doc.issues[0].message == "mapping keys must be plain strings"


def test_empty_document() -> None:
    doc = parse_yaml("# just a comment\n")
    assert doc.value is None and not doc.issues


def test_format_path_and_lookup() -> None:
    assert format_path(("agents", 1, "tts", "voice_id")) == "agents[1].tts.voice_id"
    assert format_path(()) == ""
    assert lookup({"a": [{"b": 2}]}, ("a", 0, "b")) == 2
    assert lookup({"a": []}, ("a", 3)) is None
