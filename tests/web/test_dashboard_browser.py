"""The dashboard in headless Chromium against the real daemon: login, a call appearing live, its call page."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from patterd.clock import iso_ms
from patterd.protocols.events import CallEnded, CallStarted, TranscriptLine
from patterd.store import CallStore
from tests.daemon_process import run_daemon
from tests.web.browser_support import (
    TOKEN,
    ConsoleLog,
    PythonSoftphone,
    chromium,
    needs_chromium,
    screenshot,
    write_config,
)
from tests.web.dashboard_server import DashboardServer, write_record

pytestmark = [pytest.mark.browser, pytest.mark.e2e, needs_chromium]

TIMEOUT_MS = 20_000


def test_dashboard_shows_a_call_live_and_its_transcript(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with run_daemon(config, token=TOKEN) as daemon, chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        console = ConsoleLog()
        console.attach(page)
        page.set_default_timeout(TIMEOUT_MS)

        # A token is configured: the dashboard sends us to its login form first.
        page.goto(daemon.base_url + "/")
        assert "/login" in page.url
        page.get_by_label("Token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").wait_for()
        page.get_by_label("Token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(daemon.base_url + "/")
        page.locator("#conn[data-state=live]").wait_for()  # the SSE feed is connected
        page.locator("#st-state", has_text="serving").wait_for()

        # A call placed now shows up without a reload: in the live list and in the history.
        caller = PythonSoftphone(daemon.base_url, TOKEN)
        try:
            greeting = caller.wait_line("assistant")
            assert "Thanks for calling" in greeting["text"]
            live_item = page.locator(f'#live-list li[data-call="{caller.call_id}"]')
            live_item.wait_for()
            page.locator(f'#history tr[data-call="{caller.call_id}"]').wait_for()
            assert page.locator("#live-count").inner_text() == "1"
            screenshot(page, "dashboard-live-call")
        finally:
            caller.hang_up()
        live_item.wait_for(state="detached")
        page.locator(f'#history tr[data-call="{caller.call_id}"] .pill[data-state="completed"]').wait_for()

        # The reload button reloads the config through the API (with the CSRF header).
        page.get_by_role("button", name="Reload config").click()
        page.locator("#toast", has_text=re.compile("Config reloaded")).wait_for()

        # The call page: transcript as a chat, events timeline, the number masked until revealed.
        page.locator(f'#history tr[data-call="{caller.call_id}"] td').nth(2).click()  # anywhere on the row
        page.wait_for_url(re.compile(f"/calls/{caller.call_id}$"))
        page.locator("#chat li.assistant .bubble", has_text="Thanks for calling").wait_for()
        page.locator('#timeline li[data-type="call_started"]').wait_for()
        page.locator("#call-status[data-state=completed]").wait_for()
        assert page.locator("#call-actions").is_hidden()  # no hang-up for a finished call
        number = page.locator("#call-summary .number").first
        assert "+10000000000" not in number.inner_text()
        number.get_by_role("button", name="Show full number").click()
        assert "+10000000000" in number.inner_text()
        screenshot(page, "dashboard-call-page")

        # Dark mode follows the system setting; the layout fits a phone's screen.
        dark = browser.new_context(
            color_scheme="dark", viewport={"width": 390, "height": 844}, device_scale_factor=1
        )
        dark.add_cookies(context.cookies())
        dark_page = dark.new_page()
        console.attach(dark_page)
        dark_page.goto(daemon.base_url + "/")
        dark_page.locator(f'#history tr[data-call="{caller.call_id}"]').wait_for(timeout=TIMEOUT_MS)
        screenshot(dark_page, "dashboard-dark-mobile")
        assert (
            dark_page.evaluate("() => document.documentElement.scrollWidth") <= 390
        )  # nothing overflows sideways

        assert console.errors == []


# ---------------------------------------------------------------- the in-process app (tests/web/dashboard_server.py)

PARIS = "Europe/Paris"
TURN_MEANING = "from the caller's last voiced audio to the first agent audio sent to the carrier"
# One pipeline turn with every stage (latency_fields contract) and one older turn without endpointing/transport.
STAGED = {
    "latency_ms": 642.3,
    "endpointing_ms": 500.0,
    "stt_ms": 38.1,
    "llm_ttft_ms": 1.2,
    "tts_ttfb_ms": 80.0,
    "transport_ms": 23.0,
}


OLDER_HEARD = {"latency_ms": 300.0, "heard_ms": 341.6, "network_ms": 41.6}


def _records(root: Path) -> datetime:
    now = datetime.now(UTC)
    write_record(
        root,
        "call_waterfall",
        started=now - timedelta(minutes=30),
        transcript=[
            {"role": "assistant", "text": "Thanks for calling Acme."},
            {"role": "user", "text": "what time do you open", "stt_ms": 40.0},
            {"role": "assistant", "text": "We are open 9 to 5.", **STAGED},
            {
                "role": "assistant",
                "text": "Older turn.",
                "latency_ms": 300.0,
                "stt_ms": 50.0,
                "tts_ttfb_ms": 60.0,
            },
        ],
        events=[
            {
                "type": "call_started",
                "data": {"direction": "inbound", "agent": "front-desk", "carrier": "local"},
            },
            {
                "type": "tool_call",
                "data": {
                    "name": "lookup_order",
                    "arguments": {"id": 7},
                    "result": "shipped",
                    "duration_ms": 12.0,
                },
            },
            {  # the older turn's caller reported what it heard after the line was written
                "type": "turn_heard",
                "data": {"line_ts": iso_ms(now - timedelta(minutes=30)), **OLDER_HEARD},
            },
        ],
        recording_url="javascript:alert(document.cookie)",
        cost={"total": 0.0042, "stt": 0, "tts": 0.06, "llm": 1.0059, "telephony": 0.0},
    )
    write_record(
        root,
        "call_errors",
        started=now - timedelta(minutes=20),
        transcript=[{"role": "user", "text": "hello?"}],
        events=[
            {"type": "error", "data": {"component": "llm", "message": "connection refused", "fatal": False}}
        ]
        * 2,
        errors=2,
        cost={"total": 1.0059},
    )
    for i in range(5):  # five calls in the current hour: the calls axis must still tick in whole calls
        write_record(root, f"call_busy{i}", started=now - timedelta(seconds=10 * i + 1), transcript=[])
    return now


def _page(browser: Any, width: int, **kw: Any) -> tuple[Any, ConsoleLog]:
    context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id=PARIS, **kw)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    console = ConsoleLog()
    console.attach(page)
    return page, console


def test_history_call_page_chart_live_refresh_and_restart(tmp_path: Path) -> None:
    root = tmp_path / "records"
    now = _records(root)
    server = DashboardServer(root)
    server.start()
    try:
        with chromium() as browser:
            page, console = _page(browser, 1280)
            page.goto(server.base_url + "/")
            rows = page.locator("#history tr[data-call]")
            rows.nth(6).wait_for()
            # One time zone, named: the table and the chart are both in the browser's (Paris) time.
            assert page.locator("#tz-note").inner_text() == f"({PARIS})"
            page.locator(f'#chart svg[data-tz="{PARIS}"]').wait_for()
            paris_hour = now.astimezone(ZoneInfo(PARIS)).strftime("%H:00")
            assert page.locator("#chart text.hour").last.text_content() == paris_hour
            # One cost format everywhere.
            costs = page.locator("#history td.num:last-child").all_inner_texts()
            assert costs and all(re.fullmatch(r"\$\d+\.\d{4}", c) for c in costs), costs
            assert "$1.0059" in costs and "$0.0042" in costs and "$0.0000" in costs
            # A completed call whose agent failed says so.
            pill = page.locator('#history tr[data-call="call_errors"] .pill')
            assert pill.inner_text() == "completed · errors" and pill.get_attribute("data-state") == "warning"
            # Integer ticks on the calls axis (5 calls in one hour).
            ticks = page.locator("#chart text.calls-tick").all_text_contents()
            assert ticks == ["0", "2", "4", "6", "8"], ticks

            # The whole row opens the call, by mouse (on a cell that is not the link) and by keyboard.
            page.locator('#history tr[data-call="call_errors"] td').nth(2).click()
            page.wait_for_url(re.compile("/calls/call_errors$"))
            page.locator('#call-status[data-state="warning"]').wait_for()
            page.go_back()
            row = page.locator('#history tr[data-call="call_waterfall"]')
            row.focus()
            page.keyboard.press("Enter")
            page.wait_for_url(re.compile("/calls/call_waterfall$"))

            # The waterfall: one bar per measured turn, its segments sum to the turn's total.
            falls = page.locator("#chat .waterfall")
            falls.nth(1).wait_for()
            assert falls.count() == 2
            first = falls.first
            title = first.get_attribute("title") or ""
            assert TURN_MEANING in title and "642 ms" in title
            segments = first.locator(".wf-seg")
            stages = segments.evaluate_all("els => els.map(e => [e.dataset.stage, Number(e.dataset.ms)])")
            assert [s for s, _ in stages] == ["endpointing", "stt", "llm", "tts", "transport"]
            assert sum(ms for _, ms in stages) == pytest.approx(STAGED["latency_ms"], abs=0.5)
            widths = first.evaluate(
                "w => [w.querySelector('.wf-bar').getBoundingClientRect().width,"
                " [...w.querySelectorAll('.wf-seg')].reduce((a, s) => a + s.getBoundingClientRect().width, 0)]"
            )
            assert widths[1] == pytest.approx(widths[0], abs=1.0), widths
            # The older turn: what its stages do not explain is an "other" segment, so it still sums up; its
            # caller's report (folded in from events.jsonl) adds the network bar: the sum is what it heard.
            segs = falls.nth(1).locator(".wf-seg")
            older = segs.evaluate_all("els => els.map(e => [e.dataset.stage, Number(e.dataset.ms)])")
            assert older[-1] == ["network", OLDER_HEARD["network_ms"]], older
            assert sum(ms for _, ms in older) == pytest.approx(OLDER_HEARD["heard_ms"], abs=0.5)
            assert falls.nth(1).locator(".wf-total").inner_text() == "caller heard 342 ms"
            assert first.locator(".wf-total").inner_text() == "642 ms"  # no report: the recorded latency
            assert TURN_MEANING in page.locator(".wf-legend").inner_text()

            # A javascript: recording URL is text, never a link; costs as on the list.
            assert page.locator("#call-summary a").count() == 0
            assert "javascript:alert" in page.locator("#call-summary").inner_text()
            assert page.locator("#call-cost dd").all_inner_texts() == [
                "$0.0042",
                "$0.0000",
                "$1.0059",
                "$0.0600",
                "$0.0000",
            ]
            # Events read as sentences; the raw JSON is behind a toggle.
            tool = page.locator('#timeline li[data-type="tool_call"]')
            assert tool.locator(".type").inner_text() == "tool lookup_order"
            assert "shipped" in tool.locator(".data").inner_text()
            raw = tool.locator("details.raw pre")
            assert not raw.is_visible()
            tool.locator("summary").click()
            assert '"lookup_order"' in raw.inner_text()
            screenshot(page, "dashboard-call-waterfall")

            # A phone's width: the most recent hours, 12 px labels, nothing sideways.
            phone, phone_console = _page(browser, 390, device_scale_factor=1)
            phone.goto(server.base_url + "/")
            svg = phone.locator(f'#chart svg[data-tz="{PARIS}"]')
            svg.wait_for()
            hours = int(svg.get_attribute("data-hours") or "0")
            assert 6 <= hours <= 12
            assert phone.locator("#chart-h").inner_text() == f"Last {hours} hours"
            assert phone.locator("#chart text.hour").last.text_content() == paris_hour
            sizes = phone.evaluate(
                "() => { const svg = document.querySelector('#chart svg');"
                " const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;"
                " return [...svg.querySelectorAll('text')].map(t => parseFloat(getComputedStyle(t).fontSize) * scale); }"
            )
            assert min(sizes) >= 10, sizes
            assert phone.evaluate("() => document.documentElement.scrollWidth") <= 390
            assert phone.evaluate(
                "() => document.getElementById('chart').scrollWidth <= document.getElementById('chart').clientWidth"
            )
            screenshot(phone, "dashboard-phone-width")
            assert console.errors == [] and phone_console.errors == []

            # Calls from another process on the same records appear; a restart reconnects at once.
            page, console = _page(browser, 1280)
            page.add_init_script("window.patterdPollMs = 300")  # the page re-reads the list every 5 s
            page.goto(server.base_url + "/")
            page.locator("#conn[data-state=live]").wait_for()
            # `patterd simulate` runs its call in its own process, writing the same records (and index).
            other = CallStore(root)
            t0 = datetime.now(UTC)
            other.handle(CallStarted("call_simulated", t0, agent="front-desk", carrier="local"))
            other.handle(TranscriptLine("call_simulated", t0, role="assistant", text="hi"))
            other.handle(CallEnded("call_simulated", t0 + timedelta(seconds=2), status="completed"))
            other.flush()
            other.close()
            page.locator('#history tr[data-call="call_simulated"] .pill[data-state="completed"]').wait_for()

            # A restart: unreachable at once with no stale uptime, then back as soon as it serves.
            server.stop()
            page.locator("#st-state", has_text="unreachable").wait_for(timeout=5000)
            assert page.locator("#st-uptime").inner_text() == "—"
            restarted = time.monotonic()
            server.start()
            up = time.monotonic()
            page.locator("#st-state", has_text="serving").wait_for(timeout=5000)
            page.locator("#conn[data-state=live]").wait_for(timeout=5000)
            reconnect_secs = time.monotonic() - up
            # The retry delay starts at 250 ms and doubles up to 2 s (it was a 15 s status poll).
            assert reconnect_secs < 4.0, reconnect_secs
            uptime = re.fullmatch(r"0m (\d+)s", page.locator("#st-uptime").inner_text())
            # The new process's uptime (it counts from before its start-up), not the old one's.
            assert uptime and int(uptime.group(1)) <= time.monotonic() - restarted + 1
            print(f"dashboard back {reconnect_secs:.2f} s after the restart")
            # Chromium logs each refused connection while the daemon is down; nothing else.
            assert [e for e in console.errors if "net::ERR_" not in e] == []
    finally:
        server.stop()
