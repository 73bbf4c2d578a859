"""The call page's recording player in headless Chromium: it plays, a click on a line seeks there, the line heard lights up."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from patterd.clock import iso_ms
from patterd.store.recording_file import RecordingFile
from tests.web.browser_support import ConsoleLog, chromium, needs_chromium, screenshot
from tests.web.dashboard_server import DashboardServer, now, write_record

pytestmark = [pytest.mark.browser, pytest.mark.e2e, needs_chromium]

TIMEOUT_MS = 20_000
CONNECT_SECS = 0.5  # media connected this long after the call started: the recording's second 0


def write_recording(path: Path, secs: float) -> None:
    """A stereo μ-law file: caller noise bursts on the left, agent bursts on the right."""
    n = int(secs * 8000)
    frames = np.full((n, 2), 0xFF, dtype=np.uint8)
    rng = np.random.default_rng(7)
    for start, channel in ((0.8, 0), (3.6, 1), (4.8, 0)):
        a = int(start * 8000)
        frames[a : a + 8000, channel] = rng.integers(0, 0x60, 8000, dtype=np.uint8)  # loud μ-law bytes
    out = RecordingFile(path)
    out.append(memoryview(frames.tobytes()))
    out.close()


def test_player_plays_seeks_and_highlights(tmp_path: Path) -> None:
    root = tmp_path / "records"
    started = now() - timedelta(minutes=5)
    call_id = "call_rec_browser"

    def ts(secs: float) -> str:
        return iso_ms(started + timedelta(seconds=secs))

    write_record(
        root,
        call_id,
        started=started,
        transcript=[
            {"role": "user", "text": "Hello there", "ts": ts(CONNECT_SECS + 0.8)},
            {"role": "assistant", "text": "Hi! How can I help?", "ts": ts(CONNECT_SECS + 3.6)},
            {"role": "user", "text": "Opening hours please", "ts": ts(CONNECT_SECS + 4.8)},
        ],
        events=[
            {"type": "call_started", "ts": ts(0), "data": {"direction": "inbound", "agent": "front-desk"}},
            {"type": "status", "ts": ts(CONNECT_SECS), "data": {"status": "in_progress"}},
            {"type": "barge_in", "ts": ts(CONNECT_SECS + 4.2), "data": {"played_ms": 600}},
            {"type": "tool_call", "ts": ts(CONNECT_SECS + 4.5), "data": {"name": "lookup"}},
        ],
    )
    directory = next(root.glob(f"calls/*/*/*/{call_id}"))
    write_recording(directory / "recording.wav", 6.5)

    server = DashboardServer(root)
    server.start()
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console = ConsoleLog()
            console.attach(page)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{server.base_url}/calls/{call_id}")
            page.locator("#player-card[data-waveform=ready]").wait_for()
            assert page.locator("#player-marks .mark[data-type=barge_in]").count() == 1
            assert page.locator("#player-marks .mark[data-type=tool_call]").count() == 1
            barge_at = float(page.locator(".mark[data-type=barge_in]").get_attribute("data-at") or "nan")
            assert barge_at == pytest.approx(4.2, abs=0.01)
            # The waveform drew both channels (some non-blank pixels above and below the middle).
            drawn = page.evaluate(
                """() => { const c = document.getElementById('waveform'); const g = c.getContext('2d');
                   const px = (y) => g.getImageData(0, y, c.width, 1).data.some((v, i) => i % 4 === 3 && v > 0);
                   return [px(Math.floor(c.height / 2) - 10), px(Math.floor(c.height / 2) + 10)]; }"""
            )
            assert drawn == [True, True]

            lines = page.locator("#chat > li")
            lines.nth(1).click()  # the agent's line: seek to 3.6 s and play
            page.wait_for_function(
                "() => { const a = document.getElementById('player'); return !a.paused && a.currentTime >= 3.55; }"
            )
            page.locator("#chat > li:nth-child(2).playing").wait_for()
            assert page.locator("#chat > li.playing").count() == 1
            # Playback goes on and reaches the caller's next line, which lights up in its turn.
            page.locator("#chat > li:nth-child(3).playing").wait_for()
            position = page.evaluate("document.getElementById('player').currentTime")
            assert position >= 4.8
            assert page.locator("#chat > li:nth-child(2)").get_attribute("class") is not None
            assert "playing" not in (page.locator("#chat > li:nth-child(2)").get_attribute("class") or "")

            lines.nth(0).click()  # back to the start: seeking backwards works too
            page.locator("#chat > li:nth-child(1).playing").wait_for()
            assert page.evaluate("document.getElementById('player').currentTime") < 3.6
            screenshot(page, "call-recording-player")
            assert console.errors == []
    finally:
        server.stop()
