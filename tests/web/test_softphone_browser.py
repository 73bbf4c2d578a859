"""The browser softphone in headless Chromium: a spoken question through the fake microphone, the agent's answer back."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon_process import run_daemon
from tests.web.browser_support import (
    TOKEN,
    ConsoleLog,
    chromium,
    needs_chromium,
    screenshot,
    spoken_wav,
    write_config,
)
from tests.web.dashboard_server import DashboardServer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, needs_chromium]

# The agent greets first (a few seconds of speech), then hears the question and answers it.
ANSWER_TIMEOUT_MS = 40_000
HOURS = re.compile(r"9 am|Monday to Friday")


def test_softphone_asks_for_the_opening_hours_and_hears_the_answer(tmp_path: Path) -> None:
    wav = spoken_wav(tmp_path, "what are your opening hours", before_secs=2.0, after_secs=4.0)
    config = write_config(tmp_path)
    with run_daemon(config, token=TOKEN) as daemon, chromium(wav) as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        page = context.new_page()
        console = ConsoleLog()
        console.attach(page)
        page.set_default_timeout(15_000)

        page.goto(daemon.base_url + "/login?next=/phone")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(daemon.base_url + "/phone")

        page.get_by_role("button", name="Call", exact=True).click()
        page.locator("#phone-state[data-state=connected]").wait_for()
        page.locator("#phone-chat li.assistant .bubble", has_text="Thanks for calling").wait_for()
        try:
            # The final line (the words show earlier, while spoken, as an interim line).
            page.locator("#phone-chat li.assistant:not(.interim) .bubble", has_text=HOURS).first.wait_for(
                timeout=ANSWER_TIMEOUT_MS
            )
        except Exception as exc:
            screenshot(page, "softphone-failed")
            stats = page.evaluate(
                "() => JSON.stringify({state: patterdPhone.state, error: patterdPhone.error,"
                " sent: patterdPhone.framesSent, played: patterdPhone.framesPlayed, lines: patterdPhone.transcript})"
            )
            raise AssertionError(
                f"no answer about the hours; phone {stats}; daemon log:\n" + "\n".join(daemon.log_lines[-20:])
            ) from exc
        screenshot(page, "softphone-answer")
        phone = json.loads(
            page.evaluate(
                "() => JSON.stringify({sent: patterdPhone.framesSent, played: patterdPhone.framesPlayed,"
                " received: patterdPhone.framesReceived, marks: patterdPhone.marksEchoed, lines: patterdPhone.transcript})"
            )
        )
        assert phone["sent"] > 50, phone  # 20 ms frames of microphone audio went out
        assert phone["played"] > 50, phone  # and more than a second of agent audio was played
        assert phone["received"] >= phone["played"] > 0
        assert any(line["role"] == "user" and "open" in line["text"] for line in phone["lines"]), phone[
            "lines"
        ]

        page.get_by_role("button", name="Hang up").click()
        page.locator("#phone-state[data-state=ended]").wait_for()
        call_id = page.evaluate("() => patterdPhone.callId")
        status, record = daemon.request("GET", f"/api/v1/calls/{call_id}")
        assert status == 200
        assert any(HOURS.search(line["text"]) for line in record["transcript"] if line["role"] == "assistant")
        assert console.errors == []


WORKLET = Path(__file__).resolve().parents[2] / "patterd" / "web" / "static" / "browser-phone-worklet.js"
# Stand-ins for the AudioWorkletGlobalScope, so the worklet's DSP runs as a plain page script.
WORKLET_SCOPE = "var sampleRate = 48000; var currentTime = 0; class AudioWorkletProcessor {} function registerProcessor() {}"
TONES = """
() => {
  const rms = (xs) => Math.sqrt(xs.reduce((a, x) => a + x * x, 0) / xs.length);
  function through(inRate, outRate, hz, secs) {
    const r = new Resampler(inRate, outRate, 3600);
    const n = Math.round(inRate * secs), input = new Float32Array(n);
    for (let i = 0; i < n; i++) input[i] = 0.5 * Math.sin(2 * Math.PI * hz * i / inRate);
    const out = [];
    for (let i = 0; i < n; i += 128) r.push(input.subarray(i, i + 128), (s) => out.push(s));
    return {ratio: out.length / (n * outRate / inRate), gain: rms(out.slice(out.length / 4)) / rms(input)};
  }
  const codec = [];
  for (const x of [-0.9, -0.1, -0.001, 0, 0.001, 0.1, 0.9]) codec.push(ULAW_TO_FLOAT[floatToUlaw(x)] - x);
  return {
    pass: through(48000, 8000, 1000, 1).gain,       // speech band goes through
    alias: through(48000, 8000, 6000, 1).gain,      // above 4 kHz: would fold to 2 kHz if decimated naively
    alias44: through(44100, 8000, 5000, 1).gain,
    up: through(8000, 48000, 1000, 1).gain,
    upRatio: through(8000, 48000, 1000, 1).ratio,
    downRatio: through(48000, 8000, 1000, 1).ratio,
    codecError: Math.max(...codec.map(Math.abs)),
  };
}
"""


def test_the_worklet_filters_before_decimating_and_round_trips_mulaw() -> None:
    with chromium() as browser:
        page = browser.new_page()
        page.add_script_tag(content=WORKLET_SCOPE)
        page.add_script_tag(content=WORKLET.read_text(encoding="utf-8"))
        result = page.evaluate(TONES)
    assert 0.95 < result["pass"] < 1.05, result
    assert result["alias"] < 0.01, result  # ≥ 40 dB down
    assert result["alias44"] < 0.01, result
    assert 0.95 < result["up"] < 1.05, result
    assert 0.99 < result["upRatio"] <= 1.0 and 0.99 < result["downRatio"] <= 1.0, result
    assert result["codecError"] < 0.03, result  # μ-law's step at full scale is ~1/32 of it


def _silence(directory: Path) -> Path:
    """Five seconds of silence as the fake microphone (the agent only greets)."""
    if shutil.which("sox") is None:
        pytest.skip("this test needs sox (apt-get install sox)")
    wav = directory / "silence.wav"
    subprocess.run(
        ["sox", "-n", "-r", "48000", "-c", "1", "-b", "16", str(wav), "trim", "0", "5"], check=True
    )
    return wav


def test_the_call_button_calls_again_words_stream_and_a_denied_microphone_is_explained(
    tmp_path: Path,
) -> None:
    server = DashboardServer(tmp_path / "records")
    server.start()
    try:
        with chromium(_silence(tmp_path)) as browser:
            page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
            console = ConsoleLog()
            console.attach(page)
            page.set_default_timeout(15_000)
            page.goto(server.base_url + "/")
            calls: list[str] = []
            for attempt in range(3):  # the dashboard's Call button, again and again from the same page
                page.locator("#open-phone").click()
                page.locator("#phone-state[data-state=connected]").wait_for()
                # The greeting shows while it plays (a partial line), then the final line replaces it.
                interim = page.locator("#phone-chat li.interim .bubble", has_text="Hello from the test desk")
                interim.wait_for()
                if attempt == 2:  # once: the final line replaces the words shown while spoken
                    page.locator(
                        "#phone-chat li.assistant:not(.interim) .bubble", has_text="Hello from the test desk"
                    ).wait_for()
                    assert page.locator("#phone-chat li.interim").count() == 0
                assert page.evaluate("() => patterdPhone.partials") >= 1
                calls.append(page.evaluate("() => patterdPhone.callId"))
                page.get_by_role("button", name="Hang up").click()
                page.locator("#phone-state[data-state=ended]").wait_for()
            assert len(set(calls)) == 3, calls

            # The call page of a live softphone call: hang-up offered, transfer not (the local carrier
            # cannot), and the agent's next words appear while they are spoken.
            page.locator("#open-phone").click()
            page.locator(
                "#phone-chat li.assistant:not(.interim)", has_text="Hello from the test desk"
            ).wait_for()
            call_id = page.evaluate("() => patterdPhone.callId")
            call_page = page.context.new_page()
            console.attach(call_page)
            call_page.set_default_timeout(15_000)
            call_page.goto(f"{server.base_url}/calls/{call_id}")
            call_page.locator("#conn[data-state=live]").wait_for()
            assert call_page.locator("#hangup").is_visible()
            assert not call_page.locator("#transfer-form").is_visible()
            runtime = server.runtime
            assert runtime is not None
            server.call_soon(lambda: runtime.switchboard.calls[call_id].push_text("tell me something"))
            call_page.locator("#chat li.interim .bubble", has_text="Sorry?").wait_for()
            call_page.locator("#chat li.assistant:not(.interim) .bubble", has_text="Sorry?").wait_for()
            assert call_page.locator("#chat li.interim").count() == 0
            page.get_by_role("button", name="Hang up").click()
            assert console.errors == []

            # A microphone the browser refuses: a clear message saying what to do.
            denied = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
            # What Chromium does when the user (or a policy) blocks the microphone for the site.
            denied.add_init_script(
                "navigator.mediaDevices.getUserMedia = () =>"
                " Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
            )
            denied.goto(server.base_url + "/phone")
            denied.get_by_role("button", name="Call", exact=True).click()
            alert = denied.get_by_role("alert")
            alert.wait_for()
            text = alert.inner_text()
            assert "blocked" in text and "Site settings" in text and "Call again" in text, text
            assert denied.locator("#phone-state").get_attribute("data-state") == "error"
            assert denied.get_by_role(
                "button", name="Call", exact=True
            ).is_enabled()  # try again once allowed
            screenshot(denied, "softphone-mic-denied")
    finally:
        server.stop()
