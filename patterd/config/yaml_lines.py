"""Reads YAML into plain Python values plus a map from each key's path to its line number."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from patterd.errors import ConfigIssue

PathPart = str | int
Path = tuple[PathPart, ...]

_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans and integers.

    YAML 1.1 reads `no`/`on`/`off` as booleans (so `language: no` would stop being Norwegian)
    and `010` as octal or `1:20` as sexagesimal; a config file should mean what it says.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _INT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def format_path(path: Iterable[PathPart]) -> str:
    """`("agents", 1, "tts", "voice_id")` → `agents[1].tts.voice_id`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class Document:
    """A parsed YAML document: its value, where each key sits, and what was wrong structurally."""

    value: Any
    lines: dict[Path, int] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    syntax_error: bool = False  # a syntax error stops everything after it

    def line(self, path: Iterable[PathPart]) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one (for a missing key)."""
        parts = tuple(path)
        while parts:
            if parts in self.lines:
                return self.lines[parts]
            parts = parts[:-1]
        return self.lines.get(())


def parse_yaml(text: str) -> Document:
    """Parse one YAML document; syntax errors become a single issue with line and column."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        return Document(value=None, issues=[_syntax_issue(exc)], syntax_error=True)
    except yaml.YAMLError as exc:
        return Document(value=None, issues=[ConfigIssue("", f"YAML error: {exc}")], syntax_error=True)
    finally:
        loader.dispose()
    doc = Document(value=None, lines={(): 1})
    if node is not None:
        doc.lines[()] = node.start_mark.line + 1
        doc.value = _Builder(loader, doc).build(node, ())
    return doc


def _syntax_issue(exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    what = exc.problem or "invalid YAML"
    if exc.context:
        start = exc.context_mark
        started = f" started on line {start.line + 1}" if start is not None else ""
        what += f" ({exc.context}{started})"
    if mark is None:
        return ConfigIssue("", f"YAML syntax error: {what}")
    return ConfigIssue("", f"YAML syntax error at column {mark.column + 1}: {what}", mark.line + 1)


class _Builder:
    """Turns a composed node tree into dicts/lists/scalars, recording lines and duplicate keys."""

    def __init__(self, loader: _Loader, doc: Document) -> None:
        self.loader = loader
        self.doc = doc
        self.active: set[int] = set()  # node ids on the current branch, to stop recursive aliases

    def build(self, node: Node, path: Path) -> Any:
        if id(node) in self.active:
            self._issue(path, "recursive YAML alias", node)
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            return self._scalar(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        own = sum(1 for k, _ in node.value if not (isinstance(k, ScalarNode) and k.tag == _MERGE_TAG))
        try:
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys, placing them first
        except yaml.MarkedYAMLError as exc:
            self._issue(path, f"invalid merge key: {exc.problem}", node)
        merged = len(node.value) - own  # merged entries may be overridden without being duplicates
        result: dict[str, Any] = {}
        from_merge: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, ScalarNode):
                self._issue(path, "mapping keys must be plain strings", key_node)
                continue
            key = str(key_node.value)
            key_path = (*path, key)
            line = key_node.start_mark.line + 1
            if key in result and key not in from_merge:
                first = self.doc.lines.get(key_path)
                self.doc.issues.append(
                    ConfigIssue(format_path(key_path), f"duplicate key (first defined on line {first})", line)
                )
            if index < merged:
                from_merge.add(key)
            else:
                from_merge.discard(key)
            self.doc.lines[key_path] = line
            result[key] = self.build(value_node, key_path)
        return result

    def _sequence(self, node: SequenceNode, path: Path) -> list[Any]:
        items: list[Any] = []
        for index, item in enumerate(node.value):
            self.doc.lines[(*path, index)] = item.start_mark.line + 1
            items.append(self.build(item, (*path, index)))
        return items

    def _scalar(self, node: Node, path: Path) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            self._issue(path, f"cannot read value {getattr(node, 'value', '')!r}: {exc}", node)
            return None

    def _issue(self, path: Path, message: str, node: Node) -> None:
        self.doc.issues.append(ConfigIssue(format_path(path), message, node.start_mark.line + 1))


def lookup(value: Any, path: Path) -> Any:
    """The value at `path` inside nested dicts/lists, or None."""
    for part in path:
        if isinstance(part, int) and isinstance(value, list) and part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, Mapping):
            value = value.get(part)
        else:
            return None
    return value
