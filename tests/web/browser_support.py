"""Shared pieces of the browser tests: a real daemon config with the offline agent, headless Chromium, WAV making."""

from __future__ import annotations

import base64
import queue
import shutil
import subprocess
import threading
import time
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
      engine: pocketsphinx   # the timings these tests check are pocketsphinx's (whisper adds its recognition)
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


class PythonSoftphone:
    """A caller speaking the local softphone protocol from Python: paced silence out, marks echoed, lines collected."""

    def __init__(self, base_url: str, token: str | None) -> None:
        import json
        import urllib.request

        self._json = json
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            base_url + "/webhooks/local/voice", data=b"{}", headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201, resp.status
            answer = json.loads(resp.read())
        self.call_id: str = answer["call_id"]
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.frames_received = 0
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        from websockets.sync.client import connect

        ws_url = base_url.replace("http://", "ws://") + answer["media_path"]
        self._connection = connect(ws_url, additional_headers=headers, proxy=None, open_timeout=10)
        self.ws = self._connection.__enter__()
        self._send(
            {"event": "start", "streamSid": "pytest", "start": {"mediaFormat": {"encoding": "audio/x-mulaw"}}}
        )
        self._threads = [
            threading.Thread(target=self._pace, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _send(self, msg: dict[str, Any]) -> None:
        with self._send_lock:
            self.ws.send(self._json.dumps(msg))

    def _pace(self) -> None:
        silence = base64.b64encode(b"\xff" * 160).decode()
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._send({"event": "media", "media": {"payload": silence}})
            except Exception:
                return
            next_at += 0.02
            self._stop.wait(max(0.0, next_at - time.monotonic()))  # real-time pacing of a caller's audio

    def _read(self) -> None:
        try:
            for text in self.ws:
                msg = self._json.loads(text)
                if msg.get("event") == "media":
                    self.frames_received += 1
                elif msg.get("event") == "mark":
                    self._send({"event": "mark", "mark": msg["mark"]})
                elif msg.get("event") == "transcript" and not msg.get("partial"):  # final lines only
                    self.lines.put(msg)
        except Exception:
            pass

    def wait_line(self, role: str, timeout: float = 20.0) -> dict[str, Any]:
        """The next transcript line said by `role`."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line.get("role") == role:
                return line

    def hang_up(self) -> None:
        self._stop.set()
        try:
            self._send({"event": "stop"})
        finally:
            self._connection.__exit__(None, None, None)
            for t in self._threads:
                t.join(timeout=5)
