"""The real daemon process: ready, live reload on file change, bad reload keeps the old config, drain on SIGTERM."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.daemon_process import run_daemon

pytestmark = pytest.mark.e2e

AGENT = """
  - name: {name}
    system_prompt: You are {name}.
    stt: {{type: offline}}
    llm:
      type: script
      fallback: Sorry?
      intents: []
    tts: {{type: offline}}
"""


def write_config(path: Path, agents: list[str], *, extra: str = "") -> None:
    body = "carrier: {type: local}\npersist: " + str(path.parent / "records") + "\n" + extra + "agents:\n"
    body += "".join(AGENT.format(name=name) for name in agents)
    path.write_text(body)


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll an HTTP-observable condition (the daemon's own reload takes ~1 s of file watching)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


def agent_names(daemon) -> list[str]:  # type: ignore[no-untyped-def]
    status, body = daemon.request("GET", "/api/v1/agents")
    assert status == 200, body
    return [a["name"] for a in body["agents"]]


def test_ready_reload_bad_reload_and_drain(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    write_config(config, ["alpha"])
    with run_daemon(config) as daemon:
        assert daemon.first_stdout_line.startswith("patterd dashboard: http://127.0.0.1:")
        assert daemon.request("GET", "/readyz")[0] == 200
        assert daemon.request("GET", "/healthz")[0] == 200
        assert agent_names(daemon) == ["alpha"]
        status, body = daemon.request("GET", "/api/v1/status")
        assert body["state"] == "serving" and body["config_digest"]
        first_digest = body["config_digest"]

        # Editing the file adds an agent without a restart.
        write_config(config, ["alpha", "beta"])
        wait_until(lambda: agent_names(daemon) == ["alpha", "beta"], what="the new agent")
        assert daemon.request("GET", "/api/v1/status")[1]["config_digest"] != first_digest

        # A broken file: the old agents keep serving, the error is logged with its line.
        config.write_text(config.read_text().replace("type: script", "type: scriptt"))
        entry = daemon.wait_log(lambda e: e.get("event") == "config reload refused")
        assert "scriptt" in entry["issue"] and "line" in entry["issue"]
        assert agent_names(daemon) == ["alpha", "beta"]
        status, body = daemon.request("POST", "/api/v1/reload")
        assert status == 422 and body["error"]["code"] == "invalid_request"
        assert any("did you mean 'script'" in issue for issue in body["error"]["issues"])

        metrics = daemon.request("GET", "/metrics")[1]
        assert 'patterd_reloads_total{result="ok"} 1.0' in metrics
        assert 'patterd_reloads_total{result="error"}' in metrics

        # SIGHUP reloads too (after the file is fixed).
        write_config(config, ["gamma"])
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: agent_names(daemon) == ["gamma"], what="SIGHUP reload")

        assert daemon.stop(signal.SIGTERM) == 0


def test_config_error_exits_78(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "patter.yaml"
    config.write_text("carrier: {type: twilio}\nagents: []\nbogus: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "patterd", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 78
    assert "bogus (line 3)" in proc.stderr


def test_public_bind_without_token_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "patter.yaml"
    write_config(config, ["alpha"], extra="server: {host: 0.0.0.0}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "patterd", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "dashboard_token" in proc.stderr


def test_token_required_beyond_loopback_rules(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    write_config(config, ["alpha"], extra="server: {dashboard_token: s3cret-token}\n")
    with run_daemon(config, token="s3cret-token") as daemon:
        assert daemon.request("GET", "/api/v1/status", token="")[0] == 401
        assert daemon.request("GET", "/api/v1/status", token="wrong")[0] == 401
        status, body = daemon.request("GET", "/api/v1/status")
        assert status == 200
        assert "s3cret-token" not in json.dumps(body)
        assert all("s3cret-token" not in line for line in daemon.log_lines)


async def _start_softphone_call(base_url: str, session):  # type: ignore[no-untyped-def]
    import base64

    from patterd.protocols.audio import silence_ulaw

    async with session.post(base_url + "/webhooks/local/voice", json={}) as resp:
        assert resp.status == 201
        body = await resp.json()
    ws = await session.ws_connect(base_url.replace("http", "ws") + body["media_path"])
    await ws.send_str(json.dumps({"event": "start"}))
    frame = json.dumps({"event": "media", "media": {"payload": base64.b64encode(silence_ulaw(20)).decode()}})
    await ws.send_str(frame)
    return body["call_id"], ws


@pytest.mark.parametrize("second_interrupt", [False, True], ids=["sigterm-drain", "double-sigint"])
async def test_drain_waits_for_live_calls(tmp_path: Path, second_interrupt: bool) -> None:
    import asyncio

    import aiohttp

    config = tmp_path / "patter.yaml"
    write_config(config, ["alpha"], extra="server: {drain_timeout_secs: 60}\n")
    with run_daemon(config) as daemon:
        async with aiohttp.ClientSession() as session:
            call_id, ws = await _start_softphone_call(daemon.base_url, session)
            daemon.wait_log(lambda e: e.get("event") == "call connected")
            daemon.proc.send_signal(signal.SIGINT if second_interrupt else signal.SIGTERM)
            daemon.wait_log(lambda e: e.get("event") == "draining")
            async with session.get(daemon.base_url + "/readyz") as resp:
                assert resp.status == 503
            async with session.post(daemon.base_url + "/webhooks/local/voice", json={}) as resp:
                assert resp.status == 503  # new calls are refused while draining
            assert daemon.proc.poll() is None  # the live call holds the drain open
            if second_interrupt:
                daemon.proc.send_signal(signal.SIGINT)  # stop at once: the call is ended by the daemon
            else:
                await ws.send_str(json.dumps({"event": "stop"}))  # the caller hangs up
            code = await asyncio.to_thread(daemon.proc.wait, 30)
            assert code == 0
            await ws.close()
    record = next((tmp_path / "records" / "calls").rglob(f"{call_id}/metadata.json"))
    meta = json.loads(record.read_text())
    assert meta["status"] == "completed" and meta["ended_at"]
