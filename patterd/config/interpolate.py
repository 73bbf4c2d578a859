"""Replaces `${VAR}` / `${VAR:-default}` in config strings and reads `.env` files."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patterd.config.yaml_lines import Document, PathPart, format_path
from patterd.errors import ConfigIssue

# `$$` is a literal dollar; `${NAME}` and `${NAME:-default}` are references; any other `$` stays as is.
_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MissingVariable(Exception):
    """A `${VAR}` without a default names a variable that is not set."""

    def __init__(self, name: str) -> None:
        super().__init__(f"environment variable {name} is not set")
        self.name = name


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Expand one string; raises MissingVariable for the first unset `${VAR}` without default."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        # like the shell's `:-`: an empty variable also takes the default
        if default is not None and not value:
            return default
        if value is None:
            raise MissingVariable(name)
        return value

    return _TOKEN.sub(replace, text)


def interpolate_lenient(text: str, environ: Mapping[str, str]) -> str:
    """Expand a whole file's text for its digest, leaving unset variables as written."""

    def replace(match: re.Match[str]) -> str:
        try:
            return interpolate(match.group(0), environ)
        except MissingVariable:
            return match.group(0)

    return _TOKEN.sub(replace, text)


def interpolate_document(doc: Document, environ: Mapping[str, str]) -> list[ConfigIssue]:
    """Expand every string scalar of `doc.value` in place; unset variables become issues."""
    issues: list[ConfigIssue] = []

    def visit(value: Any, path: tuple[PathPart, ...]) -> Any:
        if isinstance(value, dict):
            return {k: visit(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [visit(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            try:
                return interpolate(value, environ)
            except MissingVariable as exc:
                issues.append(ConfigIssue(format_path(path), str(exc), doc.line(path)))
                return value  # kept as written; the loader drops follow-on errors at this path
        return value

    doc.value = visit(doc.value, ())
    return issues


@dataclass(frozen=True)
class DotenvLine:
    """A line of a `.env` file that could not be read."""

    line: int
    message: str


def parse_dotenv(text: str, on_error: Callable[[DotenvLine], None] | None = None) -> dict[str, str]:
    """Parse `KEY=VALUE` lines: `export ` prefix, '…' literal, "…" with escapes, `#` comments."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _ENV_KEY.match(key):
            if on_error is not None:
                on_error(DotenvLine(number, f"expected KEY=VALUE, got {raw.strip()[:40]!r}"))
            continue
        try:
            values[key] = _dotenv_value(rest.strip())
        except ValueError as exc:
            if on_error is not None:
                on_error(DotenvLine(number, f"{key}: {exc}"))
    return values


def _dotenv_value(rest: str) -> str:
    if rest[:1] == "'":
        end = rest.find("'", 1)
        if end < 0:
            raise ValueError("unterminated single quote")
        return rest[1:end]
    if rest[:1] == '"':
        out: list[str] = []
        i = 1
        escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
        while i < len(rest):
            ch = rest[i]
            if ch == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                out.append(escapes.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                return "".join(out)
            out.append(ch)
            i += 1
        raise ValueError("unterminated double quote")
    # unquoted: an inline comment starts at whitespace followed by '#'
    comment = re.search(r"\s#", rest)
    if comment:
        rest = rest[: comment.start()]
    return rest.strip()


def load_dotenv(path: Path) -> tuple[dict[str, str], list[ConfigIssue]]:
    """Read `path` if it exists; problems are issues named after the file."""
    if not path.is_file():
        return {}, []
    issues: list[ConfigIssue] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [ConfigIssue(str(path), f"cannot read: {exc}")]

    def on_error(err: DotenvLine) -> None:
        issues.append(ConfigIssue(path.name, err.message, err.line))

    return parse_dotenv(text, on_error), issues


def merge_environ(environ: Mapping[str, str], dotenv: Mapping[str, str]) -> dict[str, str]:
    """The environment with `.env` values added; an already-set variable always wins."""
    merged = dict(dotenv)
    merged.update(environ)
    return merged
