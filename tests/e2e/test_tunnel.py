"""A cloudflared quick tunnel in front of the real daemon: the number's webhook follows the tunnel's host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from tests.daemon_process import run_daemon
from tests.fakes.twilio import FakeTwilioRest
from tests.providers.test_tunnels import FAKE_CLOUDFLARED

pytestmark = pytest.mark.e2e
NUMBER = "+15550001234"

CONFIG = """
carrier:
  type: twilio
  account_sid: {sid}
  auth_token: {token}
  base_url: {base_url}
phone_number: "{number}"
tunnel: {{type: cloudflared, binary: {binary}, restart_backoff_secs: 0.1}}
persist: false
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""


async def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_number_webhook_follows_a_restarted_quick_tunnel(tmp_path: Path) -> None:
    binary = tmp_path / "cloudflared"
    binary.write_text(f"#!{sys.executable}\n{FAKE_CLOUDFLARED}")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "runs").mkdir()
    async with FakeTwilioRest() as rest:
        sid = rest.add_number(NUMBER)
        config = tmp_path / "patter.yaml"
        config.write_text(
            CONFIG.format(
                sid=rest.account_sid,
                token=rest.auth_token,
                base_url=rest.base_url,
                number=NUMBER,
                binary=binary,
            )
        )
        env = {"FAKE_CF_DIR": str(tmp_path / "runs"), "FAKE_CF_MODE": "serve"}
        # Start in a thread: the daemon calls the fake Twilio (on this loop) before it is ready.
        with contextlib.ExitStack() as stack:
            daemon = await asyncio.to_thread(stack.enter_context, run_daemon(config, env=env))
            first = "https://fake-run-1-words.trycloudflare.com/webhooks/twilio/voice"
            assert rest.numbers[sid]["voice_url"] == first
            # cloudflared dies while we serve; the restarted one gets a new hostname.
            pid = json.loads((tmp_path / "runs" / "run-1.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            second = "https://fake-run-2-words.trycloudflare.com/webhooks/twilio/voice"
            await wait_for(lambda: rest.numbers[sid]["voice_url"] == second)
            # The webhook is re-pointed while the new providers are built; they serve right after.
            await wait_for(lambda: daemon.request("GET", "/api/v1/status")[1]["config_generation"] >= 1)
            status, body = await asyncio.to_thread(daemon.request, "GET", "/api/v1/status")
            assert status == 200
            assert body["public_host"] == "fake-run-2-words.trycloudflare.com"
            assert await asyncio.to_thread(daemon.stop) == 0
        runs = sorted((tmp_path / "runs").glob("run-*.json"))
        assert len(runs) == 2
        assert (tmp_path / "runs" / "run-2.terminated").exists()  # the daemon stopped its cloudflared
