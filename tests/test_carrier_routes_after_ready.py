"""The carriers a config does not use are mounted just after ready: their routes answer as before, and a reload can switch to one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.daemon_process import run_daemon

AGENTS = """\
agents:
  - name: desk
    stt: {type: offline}
    llm: {type: script, fallback: "Sorry?", intents: []}
    tts: {type: offline}
"""
LOCAL = "carrier: {type: local}\n" + AGENTS
TWILIO = (
    """\
carrier: {type: twilio, account_sid: ACtest, auth_token: not-a-real-token}
phone_number: "+15550001234"
webhook_url: gw.example.com
"""
    + AGENTS
)


def mounted(event: dict[str, Any]) -> bool:
    return event.get("event") == "carrier routes mounted"


def test_unused_carriers_answer_not_configured_and_a_reload_switches_to_one(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(LOCAL)
    env = {"PATTER_LOG_DIR": str(tmp_path / "records"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with run_daemon(config, env=env, args=["--no-watch"]) as daemon:
        assert daemon.request("GET", "/readyz")[0] == 200
        assert "twilio" in daemon.wait_log(mounted)["carriers"]
        # The route exists (the carrier's own 404, not the router's), as when every carrier was mounted at start.
        status, body = daemon.request("POST", "/webhooks/twilio/voice", {})
        assert status == 404 and body["error"]["message"] == "carrier 'twilio' is not configured"
        config.write_text(TWILIO)
        status, body = daemon.request("POST", "/api/v1/reload")
        assert status == 200, body
        # Now Twilio's webhook handler runs: an unsigned request is refused the carrier's way.
        assert daemon.request("POST", "/webhooks/twilio/voice", {})[0] == 403
