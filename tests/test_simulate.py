"""`patterd simulate` on the shipped config: spoken lines go through espeak-ng and pocketsphinx like a call."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from patterd.config import Config, load_config
from patterd.plugins import load_registry
from patterd.simulate import run_simulation

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program")


def on_pocketsphinx(config: Config) -> Config:
    """The shipped config with its agent's stt pinned to pocketsphinx (whisper, when installed, writes "Hi.")."""
    agent = config.agents[0]
    assert agent.stt is not None and not isinstance(agent.stt, list)
    options = agent.stt.options.model_copy(update={"engine": "pocketsphinx"})
    stt = agent.stt.model_copy(update={"options": options})
    return config.model_copy(update={"agents": [agent.model_copy(update={"stt": stt})]})


async def test_front_desk_greets_answers_hours_and_ends_the_call(tmp_path: Path) -> None:
    registry = load_registry()
    config = on_pocketsphinx(
        load_config(ROOT / "config" / "patter.yaml", registry, environ={"PATTER_LOG_DIR": str(tmp_path)})
    )
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


def without_greeting(config: Config) -> Config:
    """The shipped config with its agent's first_message removed: nothing plays before the caller."""
    agent = config.agents[0].model_copy(update={"first_message": None})
    return config.model_copy(update={"agents": [agent]})


def conversation(printed: str) -> list[tuple[str, str]]:
    return re.findall(r"^\s*(user|assistant): (.*?)(?:  \(.*\))?$", printed, re.MULTILINE)


@pytest.mark.parametrize("mode", ["text", "say"])
async def test_first_line_is_heard_without_a_greeting(tmp_path: Path, mode: str) -> None:
    registry = load_registry()
    shipped = on_pocketsphinx(
        load_config(ROOT / "config" / "patter.yaml", registry, environ={"PATTER_LOG_DIR": str(tmp_path)})
    )
    out = io.StringIO()
    lines = ["hi", "bye"]

    status = await run_simulation(without_greeting(shipped), registry, out=out, **{mode: lines})

    assert conversation(out.getvalue()) == [
        ("user", "hi"),
        ("assistant", "Hello! How can I help you today?"),
        ("user", "bye"),
        ("assistant", "Thanks for calling Acme. Goodbye!"),
    ], out.getvalue()
    assert status == 0


async def test_a_ulaw_phone_recording_is_played_to_the_agent(tmp_path: Path) -> None:
    """The format phone recordings come in: 8 kHz μ-law WAV (here espeak-ng speech converted by sox)."""
    if shutil.which("sox") is None:
        pytest.skip("needs the sox program")
    speech, recording = tmp_path / "speech.wav", tmp_path / "recording.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "what time do you open"], check=True, timeout=30)
    subprocess.run(
        ["sox", str(speech), "-r", "8000", "-c", "1", "-e", "u-law", str(recording)], check=True, timeout=30
    )
    assert recording.read_bytes()[20:22] == b"\x07\x00"  # WAVE_FORMAT_MULAW, which `wave` refuses
    registry = load_registry()
    shipped = on_pocketsphinx(
        load_config(ROOT / "config" / "patter.yaml", registry, environ={"PATTER_LOG_DIR": str(tmp_path)})
    )
    out = io.StringIO()

    await run_simulation(without_greeting(shipped), registry, wav=recording, out=out)

    assert conversation(out.getvalue())[:2] == [
        ("user", "what time do you open"),
        ("assistant", "We are open Monday to Friday, 9 am to 5 pm, and Saturday 10 am to 2 pm."),
    ], out.getvalue()
