"""The dashboard in headless Chromium against the real daemon: login, a call appearing live, its call page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
        page.locator(f'#history tr[data-call="{caller.call_id}"] a').click()
        page.wait_for_url(re.compile(f"/calls/{caller.call_id}$"))
        page.locator("#chat li.assistant .bubble", has_text="Thanks for calling").wait_for()
        page.locator("#timeline li", has_text="call_started").wait_for()
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
