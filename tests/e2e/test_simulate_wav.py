"""`patterd simulate --wav` on the shipped front desk with the whisper engine: a phone recording books Maria Garcia."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.scenarios import ToolServer

ROOT = Path(__file__).resolve().parents[2]
SAID = "Hello, I would like to book an appointment for Maria Garcia on Tuesday at 3 pm."

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)


def phone_recording(path: Path) -> None:
    """The caller's line as a phone would record it: espeak-ng through sox to an 8 kHz μ-law WAV (no dither: the same clip every run)."""
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-v", "en-us+m3", "-s", "150", SAID], capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["sox", "-D", "-t", "wav", "-", "-r", "8000", "-c", "1", "-e", "mu-law", str(path)],
        input=wav,
        check=True,
    )


def front_desk_with_booking(tool_url: str, records: Path) -> str:
    """The shipped config on whisper without its greeting, its booking intent calling a webhook tool at `tool_url`."""
    config = yaml.safe_load((ROOT / "config" / "patter.yaml").read_text())
    config["persist"] = str(records)
    agent = config["agents"][0]
    agent["stt"]["engine"] = "whisper"
    agent.pop("first_message")  # the caller speaks at once: no greeting to sit through in real time
    agent["tools"].append(
        {
            "type": "webhook",
            "name": "book_appointment",
            "description": "Book an appointment.",
            "parameters": {
                "type": "object",
                "properties": {k: {"type": "string"} for k in ("name", "day", "time")},
            },
            "url": tool_url,
        }
    )
    [booking] = [i for i in agent["llm"]["intents"] if i["name"] == "book_appointment"]
    booking["tool"] = {
        "name": "book_appointment",
        "arguments": {"name": "{name}", "day": "{day}", "time": "{time}"},
    }
    return yaml.safe_dump(config)


async def test_a_phone_recording_books_maria_garcia_on_tuesday_at_3_pm(tmp_path: Path) -> None:
    tool = ToolServer(answer={"booked": True, "reference": "A-17"})
    await tool.start()
    try:
        config = tmp_path / "patter.yaml"
        config.write_text(front_desk_with_booking(tool.url, tmp_path / "records"))
        recording = tmp_path / "caller.wav"
        phone_recording(recording)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "patterd", "simulate", "--config", str(config), "--wav", str(recording),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PATTER_LOG_DIR": str(tmp_path / "logs")},
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        await tool.close()
    printed = out.decode()
    users = re.findall(r"^\s*user: (.*?)(?:  \(.*\))?$", printed, re.MULTILINE)
    assert len(users) == 1 and "Maria Garcia" in users[0], printed
    assert "assistant: You are booked for Maria Garcia on Tuesday at 3 PM." in printed, printed
    assert re.search(r"tool: book_appointment\(.*'name': 'Maria Garcia'.*\) → .*\"booked\": true", printed), (
        printed
    )
    assert tool.received == [{"name": "Maria Garcia", "day": "Tuesday", "time": "3 PM"}]
