"""`patterd simulate` on the shipped config: spoken lines go through espeak-ng and pocketsphinx like a call."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from patterd.config import Config, load_config
from patterd.plugins import load_registry
from patterd.simulate import run_simulation
from tests.concurrent import cancelled_at_exit

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs the espeak-ng program"),
    pytest.mark.asyncio(loop_scope="module"),
]


def on_pocketsphinx(config: Config) -> Config:
    """The shipped config with its agent's stt pinned to pocketsphinx (whisper, when installed, writes "Hi.")."""
    agent = config.agents[0]
    assert agent.stt is not None and not isinstance(agent.stt, list)
    options = agent.stt.options.model_copy(update={"engine": "pocketsphinx"})
    stt = agent.stt.model_copy(update={"options": options})
    return config.model_copy(update={"agents": [agent.model_copy(update={"stt": stt})]})


@dataclass
class Simulated:
    """One simulated call: what it printed, its exit status, and the log dir its record went to."""

    printed: str
    status: int
    log_dir: Path


async def front_desk(tmp_path: Path) -> Simulated:
    registry = load_registry()
    config = on_pocketsphinx(
        load_config(ROOT / "config" / "patter.yaml", registry, environ={"PATTER_LOG_DIR": str(tmp_path)})
    )
    out = io.StringIO()
    status = await run_simulation(config, registry, say=["hi", "what time do you open", "bye"], out=out)
    return Simulated(out.getvalue(), status, tmp_path)


async def test_front_desk_greets_answers_hours_and_ends_the_call(simulations: Simulations) -> None:
    simulated = await simulations["front_desk"]
    status, tmp_path = simulated.status, simulated.log_dir
    printed = simulated.printed
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


async def first_line(tmp_path: Path, mode: str) -> Simulated:
    registry = load_registry()
    shipped = on_pocketsphinx(
        load_config(ROOT / "config" / "patter.yaml", registry, environ={"PATTER_LOG_DIR": str(tmp_path)})
    )
    out = io.StringIO()
    lines = ["hi", "bye"]
    config = without_greeting(shipped)
    if mode == "text":
        status = await run_simulation(config, registry, out=out, text=lines)
    else:
        status = await run_simulation(config, registry, out=out, say=lines)
    return Simulated(out.getvalue(), status, tmp_path)


@pytest.mark.parametrize("mode", ["text", "say"])
async def test_first_line_is_heard_without_a_greeting(simulations: Simulations, mode: str) -> None:
    simulated = await simulations[f"first_line_{mode}"]
    assert conversation(simulated.printed) == [
        ("user", "hi"),
        ("assistant", "Hello! How can I help you today?"),
        ("user", "bye"),
        ("assistant", "Thanks for calling Acme. Goodbye!"),
    ], simulated.printed
    assert simulated.status == 0


async def ulaw_recording(tmp_path: Path) -> Simulated:
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
    status = await run_simulation(without_greeting(shipped), registry, wav=recording, out=out)
    return Simulated(out.getvalue(), status, tmp_path)


async def test_a_ulaw_phone_recording_is_played_to_the_agent(simulations: Simulations) -> None:
    simulated = await simulations["ulaw_recording"]
    assert conversation(simulated.printed)[:2] == [
        ("user", "what time do you open"),
        ("assistant", "We are open Monday to Friday, 9 am to 5 pm, and Saturday 10 am to 2 pm."),
    ], simulated.printed


# Each test's simulated call, by the test it belongs to (name, or name[param]).
SCENARIOS: dict[str, tuple[str, Callable[[Path], Coroutine[object, object, Simulated]]]] = {
    "test_front_desk_greets_answers_hours_and_ends_the_call": ("front_desk", front_desk),
    "test_first_line_is_heard_without_a_greeting[text]": ("first_line_text", lambda t: first_line(t, "text")),
    "test_first_line_is_heard_without_a_greeting[say]": ("first_line_say", lambda t: first_line(t, "say")),
    "test_a_ulaw_phone_recording_is_played_to_the_agent": ("ulaw_recording", ulaw_recording),
}
Simulations = dict[str, asyncio.Task[Simulated]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def simulations(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Simulations]:
    """The selected tests' simulated calls, all at once (each its own config, graph and record dir).

    A simulation plays its lines and the agent's answers in real time, so in turn they waited as long as
    all of them together; each test still checks only its own call.
    """
    names = [item.name for item in request.session.items if item.path == request.path]
    tasks: Simulations = {
        key: asyncio.create_task(run(tmp_path_factory.mktemp(key)))
        for name, (key, run) in SCENARIOS.items()
        if name in names
    }
    async with cancelled_at_exit(tasks):
        yield tasks
