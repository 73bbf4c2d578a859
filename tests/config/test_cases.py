"""Golden config cases: each cases/NAME.yaml resolves to NAME.json or fails with exactly NAME.err.

Set UPDATE_GOLDEN=1 to rewrite the expected files from the current output (then review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from patterd.config import load_config
from patterd.errors import ConfigError
from tests.config.specs import make_registry

CASES = Path(__file__).parent / "cases"
NAMES = sorted(p.stem for p in CASES.glob("*.yaml"))
BASE_ENV = {"HOME": "/home/tester"}  # persist: ~ and the platform default resolve under here


def case_environ(path: Path) -> dict[str, str]:
    """BASE_ENV plus the case's `# env: NAME=value` header lines."""
    env = dict(BASE_ENV)
    for line in path.read_text().splitlines():
        if line.startswith("# env: "):
            key, _, value = line[len("# env: ") :].partition("=")
            env[key] = value
    return env


def resolve(path: Path) -> tuple[str, str]:
    """("json", text) for a valid case, ("err", text) for an invalid one."""
    try:
        config = load_config(path, make_registry(), environ=case_environ(path))
    except ConfigError as exc:
        return "err", "".join(f"{issue}\n" for issue in exc.issues)
    data: dict[str, Any] = config.to_public_dict()
    del data["source"], data["digest"]  # machine-specific / churns with every edit; tested elsewhere
    return "json", json.dumps(data, indent=2, sort_keys=True) + "\n"


def test_there_are_enough_cases() -> None:
    kinds = [resolve(CASES / f"{n}.yaml")[0] for n in NAMES]
    assert len(NAMES) >= 12
    assert kinds.count("json") >= 6 and kinds.count("err") >= 6


@pytest.mark.parametrize("name", NAMES)
def test_case(name: str) -> None:
    kind, actual = resolve(CASES / f"{name}.yaml")
    expected_file = CASES / f"{name}.{kind}"
    other = CASES / f"{name}.{'err' if kind == 'json' else 'json'}"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(actual)
        other.unlink(missing_ok=True)
    assert not other.exists(), f"{name}: expected {other.name} but the case produced {kind}:\n{actual}"
    assert expected_file.exists(), f"{name}: no {expected_file.name}; got:\n{actual}"
    assert actual == expected_file.read_text()


def test_five_mistakes_are_all_reported_with_lines() -> None:
    kind, text = resolve(CASES / "five_mistakes.yaml")
    lines = text.splitlines()
    assert kind == "err" and len(lines) >= 5
    assert all("(line " in line for line in lines)


def test_no_secret_reaches_any_output() -> None:
    secrets = ("tw-secret-token", "s3cr3t-token", "sk-test", "dg-key", "el-key", "KEY0123", "Bearer abc")
    for name in NAMES:
        _, text = resolve(CASES / f"{name}.yaml")
        for secret in secrets:
            assert secret not in text, f"{name} leaks {secret!r}"
