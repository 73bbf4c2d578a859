"""`patterd simulate` on the shipped config: spoken lines go through espeak-ng and pocketsphinx like a call."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest

from patterd.config import load_config
from patterd.plugins import load_registry
from patterd.simulate import run_simulation

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")


async def test_front_desk_greets_answers_hours_and_ends_the_call(tmp_path: Path) -> None:
    registry = load_registry()
    config = load_config(ROOT / "config" / "patter.yaml", registry, environ={"PATTER_LOG_DIR": str(tmp_path)})
    out = io.StringIO()

    status = await run_simulation(config, registry, say=["hi", "what time do you open", "bye"], out=out)

    printed = out.getvalue()
    users = re.findall(r"^\s*user: (.*?)(?:  \(.*\))?$", printed, re.MULTILINE)
    assistants = re.findall(r"^\s*assistant: (.*?)(?:  \(.*\))?$", printed, re.MULTILINE)
    assert users == ["hi", "what time do you open", "bye"], printed
    assert assistants[1:] == [
        "Hello! How can I help you today?",
        "We are open Monday to Friday, 9 am to 5 pm, and Saturday 10 am to 2 pm.",
        "Thanks for calling Acme. Goodbye!",
    ], printed
    assert "tool: end_call(" in printed, printed
    assert re.search(r": completed \(caller said goodbye\);", printed), printed
    assert status == 0
    # The call record was written like a real call's.
    metadata = list((tmp_path / "calls").rglob("metadata.json"))
    assert len(metadata) == 1, f"expected one call record under {tmp_path}, found {metadata}"
    record = json.loads(metadata[0].read_text())
    assert record["status"] == "completed" and record["provider_mode"] == "pipeline", record
    transcript = (metadata[0].parent / "transcript.jsonl").read_text().splitlines()
    assert len(transcript) == 6 + 1, transcript  # the greeting and three exchanges
