"""Imports point one way (design.md): protocols ← providers ← plugins ← config ← graph ← calls ← store/web ← daemon ← cli."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "patterd"

# For each layer, the patterd modules it must never import (at run time; `if TYPE_CHECKING:` imports are types only).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "patterd.protocols": (
        "patterd.providers",
        "patterd.plugins",
        "patterd.config",
        "patterd.graph",
        "patterd.calls",
        "patterd.store",
        "patterd.web",
        "patterd.daemon",
        "patterd.cli",
        "patterd.metrics",
    ),
    "patterd.providers": (
        "patterd.plugins",
        "patterd.config",
        "patterd.graph",
        "patterd.calls",
        "patterd.store",
        "patterd.web",
        "patterd.daemon",
        "patterd.cli",
        "patterd.metrics",
    ),
    "patterd.plugins": (
        "patterd.config",
        "patterd.graph",
        "patterd.calls",
        "patterd.web",
        "patterd.daemon",
        "patterd.cli",
    ),
    "patterd.config": (
        "patterd.graph",
        "patterd.calls",
        "patterd.store",
        "patterd.web",
        "patterd.daemon",
        "patterd.cli",
    ),
    "patterd.graph": ("patterd.calls", "patterd.store", "patterd.web", "patterd.daemon", "patterd.cli"),
    "patterd.calls": ("patterd.store", "patterd.web", "patterd.daemon", "patterd.cli"),
    "patterd.store": ("patterd.calls", "patterd.web", "patterd.daemon", "patterd.cli", "patterd.graph"),
    "patterd.web": ("patterd.daemon", "patterd.cli"),
    "patterd.daemon": ("patterd.cli",),
}
# Sans-I/O: the protocol layer moves no bytes and reads no clocks.
PROTOCOL_FORBIDDEN_LIBS = ("asyncio", "socket", "aiohttp", "websockets", "starlette", "hypercorn", "time")


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                type_only.add(id(child))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_point_one_way(path: Path) -> None:
    module = _module_name(path)
    problems = []
    for layer, forbidden in FORBIDDEN.items():
        if module == layer or module.startswith(layer + "."):
            for line, imported in _runtime_imports(path):
                if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                    problems.append(f"{path.name}:{line} {module} imports {imported} ({layer} may not)")
    if module.startswith("patterd.protocols"):
        for line, imported in _runtime_imports(path):
            if imported.split(".")[0] in PROTOCOL_FORBIDDEN_LIBS:
                problems.append(f"{path.name}:{line} sans-I/O module {module} imports {imported}")
    assert not problems, "\n".join(problems)


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(PACKAGE.parent))
        for p in MODULES
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert not missing, f"modules without a one-line docstring: {missing}"


# Core knows carriers only through their specs' CarrierFacts (issue 17): no carrier's name in these paths
# (code, templates, static assets). Config data (YAML) may name a carrier type: that is what users write.
CARRIER_FREE = ("calls", "web", "config", "cost.py", "daemon.py")
DATA_SUFFIXES = (".yaml", ".yml", ".json")
CARRIER_WORDS = ("softphone",)  # the built-in browser carrier's other name
# Carrier names that are also plain English ("local time", `recording: local`): only carrier-ish uses count.
COMMON_WORD_FORMS = (r"carrier[ .:]+{n}\b", r"\b{n} (?:soft)?phone", r"\b{n} carrier", r"/{n}/")


def _carrier_pattern() -> re.Pattern[str]:
    from patterd.plugins import load_registry

    names = sorted({loaded.spec.name for loaded in load_registry() if loaded.spec.kind == "carrier"})
    assert {"twilio", "telnyx", "local"} <= set(names)  # the registry was read: the check can fail
    plain = [n for n in names if n != "local"] + list(CARRIER_WORDS)
    forms = [r"\b(?:" + "|".join(map(re.escape, plain)) + r")\b"]
    forms += [form.format(n="local") for form in COMMON_WORD_FORMS]
    return re.compile("|".join(forms), re.IGNORECASE)


def _carrier_free_files() -> list[Path]:
    files: list[Path] = []
    for entry in CARRIER_FREE:
        path = PACKAGE / entry
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return [p for p in files if "__pycache__" not in p.parts and p.suffix not in DATA_SUFFIXES]


def test_no_carrier_is_named_in_core() -> None:
    pattern = _carrier_pattern()
    hits: list[str] = []
    for path in _carrier_free_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary assets hold no wording
        for number, line in enumerate(text.splitlines(), 1):
            hits.extend(
                f"{path.relative_to(PACKAGE.parent)}:{number}: {match.group(0)!r} in {line.strip()[:100]}"
                for match in pattern.finditer(line)
            )
    assert not hits, "carrier names in core (move them to the carrier's spec or module):\n" + "\n".join(hits)


def test_the_carrier_name_check_can_fail() -> None:
    pattern = _carrier_pattern()
    for line in ('if name == "twilio":', "carrier.local", "POST /webhooks/local/voice", "the Softphone page"):
        assert pattern.search(line), line
    for line in ("the browser's local time", "recording: local", "~/.local/share", "a local script"):
        assert not pattern.search(line), line
