"""Shared pieces of the browser tests: a real daemon config with the offline agent, headless Chromium, WAV making."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token-0123456789"

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)

# The shipped front desk, trimmed to what the browser tests talk to: every part is an offline built-in.
AGENT_CONFIG = """\
carrier: {type: local}
persist: "%(records)s"
server:
  host: 127.0.0.1
  port: 8000
  dashboard_token: "%(token)s"
logging: {level: info, redact_phone: full}
agents:
  - name: front-desk
    first_message: Thanks for calling Acme. How can I help?
    tools: [{type: end_call}]
    stt:
      type: offline
      endpointing_ms: 500
      phrases: [hi, hello, what are your opening hours, what time do you open, where are you located, thank you goodbye, bye]
    llm:
      type: script
      fallback: Sorry, I can tell you our opening hours or address.
      intents:
        - name: greeting
          examples: [hi, hello]
          reply: Hello! How can I help you today?
        - name: opening_hours
          examples: [what are your opening hours, what time do you open, when are you open]
          keywords: ['\\bhours?\\b', '\\bopen(ing)?\\b']
          reply: We are open Monday to Friday, 9 am to 5 pm.
        - name: goodbye
          examples: [bye, goodbye, thank you bye]
          reply: Thanks for calling. Goodbye!
          tool: {name: end_call, arguments: {reason: caller said goodbye}}
    tts: {type: offline, voice: en-us, rate_wpm: 175}
    vad: {type: offline, aggressiveness: 2, min_speech_ms: 200, min_silence_ms: 300}
"""


def write_config(directory: Path, token: str = TOKEN) -> Path:
    """A patter.yaml for the offline front desk on the local carrier, records under `directory`."""
    path = directory / "patter.yaml"
    path.write_text(AGENT_CONFIG % {"records": directory / "records", "token": token}, encoding="utf-8")
    return path


def spoken_wav(directory: Path, text: str, *, before_secs: float = 3.0, after_secs: float = 3.0) -> Path:
    """`text` spoken by espeak-ng, 48 kHz mono 16-bit, padded with silence (Chromium loops the file)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("this test needs espeak-ng and sox (apt-get install espeak-ng sox)")
    raw = directory / "speech-raw.wav"
    out = directory / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
    subprocess.run(
        [
            "sox",
            str(raw),
            "-r",
            "48000",
            "-c",
            "1",
            "-b",
            "16",
            str(out),
            "pad",
            str(before_secs),
            str(after_secs),
        ],
        check=True,
    )
    return out


def chromium_args(wav: Path | None = None) -> list[str]:
    """Flags for a quiet headless Chromium with a fake microphone (playing `wav` when given)."""
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ]
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav}")
    return args


@dataclass
class ConsoleLog:
    """Console errors and uncaught page errors seen by a page."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))


@contextmanager
def chromium(wav: Path | None = None) -> Iterator[Any]:
    """A headless Chromium browser (Playwright, the Debian binary: Playwright's own download is not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=chromium_args(wav))
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
