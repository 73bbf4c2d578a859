"""Turn latency as a browser caller hears it, against what the daemon records for that turn.

The page is instrumented (its WebSocket wrapped before the softphone loads): every media frame it
sends is timed and judged voiced by the daemon's own rule (RMS of the μ-law frame ≥ VOICED_RMS), and
every media frame it receives is timed. The caller's latency for the turn is the first agent frame
received after the question minus the last voiced frame sent; the daemon's `latency_ms` for that
turn runs from the arrival of that same frame to the write of that same agent frame, so the two
differ only by the two one-way trips between page and daemon (loopback websocket, event loops).
The softphone's receiver report (its `heard` reply to the daemon's `turn` message) measures those
trips from the page's side, so the call page's waterfall, network bar included, sums to what this
independent instrumentation measured.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from patterd.protocols.audio import VOICED_RMS
from tests.daemon_process import run_daemon
from tests.web.browser_support import TOKEN, chromium, needs_chromium, screenshot, spoken_wav, write_config

pytestmark = [pytest.mark.browser, pytest.mark.e2e, needs_chromium]

# The browser's interval contains the daemon's (the last voiced frame is sent before it arrives,
# the first agent frame is written before it is received), so browser - recorded >= 0 always; the
# excess is the two one-way trips: loopback (sub-ms) plus however long each side's event loop was
# busy before it took the frame (the page's main thread also feeds the audio worklet, the daemon's
# runs the call and the speech recognizer's thread competes for the GIL). Measured 2-17 ms per turn
# on an idle machine and up to 127 ms with the 2 shared cores at a load average of 12: latency_ms
# alone cannot match the browser to 5 ms. Asserted: on every turn 0 <= excess <= EXCESS_BOUND_MS (the
# old measure lost the VAD's 300 ms silence window plus ~140 ms of webrtcvad hangover, 415-515 ms per
# turn). (This test used to assert excess <= 20 ms on the best turn as evidence that both sides count
# the same frame; the waterfall check below proves that on every turn: the page's report is timed from
# the chunk the daemon announced, the instrumentation from its own voiced rule, and frames are 20 ms apart.)
EXCESS_BOUND_MS = 250.0
# The waterfall with the caller's report sums to heard_ms, which the page measures between the same two
# frames as the instrumentation (its stamps are microseconds from the wrapper's, in the same tasks), so
# what is left is rounding (0.1 ms per stage) and the page's own few lines of JavaScript: 5 ms is the
# issue's bound, whatever the load (that time is inside both measurements).
WATERFALL_MS = 5.0
QUIET_MS = (
    300.0  # no answer comes sooner after the caller's last voiced frame (endpointing_ms >= 300, asserted)
)
TURNS = 2  # Chromium loops the microphone file: the question is asked again every few seconds
ANSWER_TIMEOUT_SECS = 40.0

INSTRUMENT = """
(() => {
  const ULAW = new Int16Array(256);
  for (let i = 0; i < 256; i++) {  // G.711 μ-law decode, as audioop.ulaw2lin
    const u = ~i & 0xff, exp = (u >> 4) & 7, mant = u & 0x0f;
    const mag = (((mant << 3) + 0x84) << exp) - 0x84;
    ULAW[i] = (u & 0x80) ? -mag : mag;
  }
  const T = { voiced: [], sent: 0, received: [] };
  window.__latency = T;
  const rms = (b64) => {
    const bytes = atob(b64);
    let sum = 0;
    for (let i = 0; i < bytes.length; i++) { const x = ULAW[bytes.charCodeAt(i)]; sum += x * x; }
    return Math.sqrt(sum / Math.max(1, bytes.length));
  };
  const Native = window.WebSocket;
  class TimedWebSocket extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => {
        const now = performance.now();
        if (typeof e.data === "string" && e.data.startsWith('{"event":"media"')) T.received.push(now);
      });
    }
    send(data) {
      const now = performance.now();
      if (typeof data === "string" && data.includes('"event":"media"')) {
        T.sent++;
        if (rms(JSON.parse(data).media.payload) >= %(voiced)d) T.voiced.push(now);
      }
      return super.send(data);
    }
  }
  window.WebSocket = TimedWebSocket;
})();
"""


def caller_turns_ms(timing: dict[str, Any], turns: int) -> list[float]:
    """The caller's latency of each of the first `turns` questions, from the page's own timestamps."""
    voiced: list[float] = timing["voiced"]
    received: list[float] = timing["received"]
    assert voiced, timing["sent"]
    out: list[float] = []
    since = 0.0
    for _ in range(turns):
        # Agent audio comes in bursts (it is sent faster than it plays): the first agent frame after a
        # question's first voiced frame, with no voiced frame sent in the QUIET_MS before it, starts its
        # answer (a slow start can deliver the greeting while the caller already speaks), and the
        # question ends at the voiced frame sent last before that.
        first = next(t for t in voiced if t > since)
        answer = next(t for t in received if t > first and not any(t - QUIET_MS < v < t for v in voiced))
        out.append(answer - max(t for t in voiced if t < answer))
        since = answer
    return out


def waterfall_sum(line: dict[str, Any]) -> float:
    """What the call page's waterfall adds up: every stage of the turn, the network bar included."""
    return float(sum(line.get(k) or 0.0 for k in (*LATENCY_STAGES, "network_ms")))


LATENCY_STAGES = ("endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "transport_ms")


def test_recorded_turn_latency_is_what_the_browser_caller_hears(tmp_path: Path) -> None:
    wav = spoken_wav(tmp_path, "what time do you open", before_secs=1.5, after_secs=2.5)
    config = write_config(tmp_path)
    with run_daemon(config, token=TOKEN) as daemon, chromium(wav) as browser:
        page = browser.new_context().new_page()
        page.add_init_script(INSTRUMENT % {"voiced": VOICED_RMS})
        page.set_default_timeout(15_000)
        page.goto(daemon.base_url + "/login?next=/phone")
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(daemon.base_url + "/phone")
        page.get_by_role("button", name="Call", exact=True).click()
        page.locator("#phone-state[data-state=connected]").wait_for()
        call_id = page.evaluate("() => patterdPhone.callId")
        # Answers are recorded with their timing once heard (or cut off by the next question), and what
        # the caller heard of each once the page's report is in (on the line, or folded in from events).
        answers: list[dict[str, Any]] = []
        deadline = time.monotonic() + ANSWER_TIMEOUT_SECS
        while time.monotonic() < deadline:
            page.wait_for_timeout(200)  # polls the record store through the API, as an operator would
            status, record = daemon.request("GET", f"/api/v1/calls/{call_id}")
            if status == 200:
                answers = [
                    line
                    for line in record["transcript"]
                    if line["role"] == "assistant" and line.get("latency_ms") is not None
                ]
                if len(answers) >= TURNS and all("heard_ms" in line for line in answers[:TURNS]):
                    break
        if len(answers) < TURNS:
            screenshot(page, "latency-no-answer")
        timing = json.loads(page.evaluate("() => JSON.stringify(window.__latency)"))
        reports = page.evaluate("() => patterdPhone.heard")
        page.get_by_role("button", name="Hang up").click()
        page.locator("#phone-state[data-state=ended]").wait_for()
        # The call page draws those lines: read its waterfalls back (segments by stage, and the total).
        page.goto(f"{daemon.base_url}/calls/{call_id}")
        falls = page.locator("#chat .waterfall")
        falls.nth(TURNS - 1).wait_for()
        drawn = falls.evaluate_all(
            "ws => ws.map(w => ({heard: w.dataset.heard, total: w.querySelector('.wf-total').textContent,"
            " stages: [...w.querySelectorAll('.wf-seg')].map(s => [s.dataset.stage, Number(s.dataset.ms)])}))"
        )
    assert len(answers) >= TURNS, "answered turns recorded: " + json.dumps(answers)
    heard = caller_turns_ms(timing, TURNS)
    excess = [h - line["latency_ms"] for h, line in zip(heard, answers, strict=False)]
    sums = [waterfall_sum(line) for line in answers[:TURNS]]
    off = [round(h - w, 2) for h, w in zip(heard, sums, strict=False)]
    detail = (
        f"browser {heard} ms, waterfall {sums}, browser - waterfall {off}, excess {excess}, "
        f"page reports {reports}, recorded {answers[:TURNS]}"
    )
    print(f"turn latency: {detail}")
    assert all(-0.05 <= e <= EXCESS_BOUND_MS for e in excess), detail  # 0.05: latency_ms is rounded
    for line in answers[:TURNS]:
        # The latency stages add up to the recorded latency, and waiting for the end of the turn is most of it;
        # the caller's report adds the network bar, and with it the waterfall adds up to what the caller heard.
        assert sum(line.get(k) or 0.0 for k in LATENCY_STAGES) == pytest.approx(line["latency_ms"], abs=0.05)
        assert line["endpointing_ms"] >= 300 and line["endpointing_ms"] > line["latency_ms"] / 2, detail
        assert line["network_ms"] == pytest.approx(line["heard_ms"] - line["latency_ms"], abs=0.05), detail
        assert waterfall_sum(line) == pytest.approx(line["heard_ms"], abs=0.1), detail
    assert all(abs(o) <= WATERFALL_MS for o in off), detail
    # The call page shows the same: a network bar, "caller heard N ms", segments summing to the browser's figure.
    for fall, line, browser_ms in zip(drawn, answers, heard, strict=False):
        stages = dict(fall["stages"])
        assert "network" in stages and fall["total"] == f"caller heard {int(line['heard_ms'] + 0.5)} ms", (
            drawn
        )
        assert abs(sum(stages.values()) - browser_ms) <= WATERFALL_MS, (drawn, detail)
