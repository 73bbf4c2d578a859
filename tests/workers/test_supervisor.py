"""`server.workers: 2` in the real process: one port, one READY, reload fan-out, a killed worker replaced, drain."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from patterd.protocols.audio import silence_ulaw
from tests.daemon_process import DaemonProcess, run_daemon

pytestmark = pytest.mark.e2e

CONFIG = """carrier: {{type: local}}
persist: {records}
server: {{workers: 2, drain_timeout_secs: 60}}
agents:
  - name: alpha
    system_prompt: You are alpha.
    stt: {{type: offline}}
    llm: {{type: script, fallback: "Sorry?", intents: []}}
    tts: {{type: offline}}
"""
FRAME = json.dumps({"event": "media", "media": {"payload": base64.b64encode(silence_ulaw(20)).decode()}})


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll an HTTP-observable condition."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


def datagrams(sock: socket.socket, until: Callable[[list[str]], bool], timeout: float = 30.0) -> list[str]:
    """sd_notify datagrams received until `until(received)` holds."""
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(received):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            received.append(sock.recv(4096).decode())
        except TimeoutError:
            raise AssertionError(f"notifications so far: {received}") from None
    return received


def workers(daemon: DaemonProcess) -> list[dict[str, Any]]:
    status, body = daemon.request("GET", "/api/v1/status")
    assert status == 200, body
    return list(body.get("workers") or [])


async def history_loaded(run_dir: Path, index: int, timeout: float = 30.0) -> None:
    """Wait until worker `index` reports its call history loaded (`history.loading` false)."""
    deadline = time.monotonic() + timeout
    async with worker_session(run_dir, index) as session:
        while True:
            async with session.get("http://worker/api/v1/status?scope=worker") as resp:
                history = (await resp.json()).get("history") or {}
            if not history.get("loading", True):
                return
            assert time.monotonic() < deadline, f"worker {index} still loading its history: {history}"
            await asyncio.sleep(0.05)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


@asynccontextmanager
async def worker_session(run_dir: Path, index: int) -> AsyncIterator[aiohttp.ClientSession]:
    """HTTP to one worker through its own socket (the shared port picks a worker at random)."""
    connector = aiohttp.UnixConnector(path=str(run_dir / f"worker-{index}.sock"))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def start_call(session: aiohttp.ClientSession) -> tuple[str, aiohttp.ClientWebSocketResponse]:
    """A browser-softphone call on the worker behind `session`; its media socket is open and sending."""
    async with session.post("http://worker/webhooks/local/voice", json={}) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    ws = await session.ws_connect("ws://worker" + body["media_path"])
    await ws.send_str(json.dumps({"event": "start"}))
    await ws.send_str(FRAME)
    return body["call_id"], ws


async def end_call(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str(json.dumps({"event": "stop"}))  # the caller hangs up
    await ws.close()


def live_calls(daemon: DaemonProcess) -> dict[str, int]:
    """call id → the worker holding it, from any worker's status."""
    body = daemon.request("GET", "/api/v1/status")[1]
    return {c["call_id"]: c["worker"] for c in body["live_calls"]}


def record_status(records: Path, call_id: str) -> str | None:
    for path in (records / "calls").rglob(f"{call_id}/metadata.json"):
        return str(json.loads(path.read_text())["status"])
    return None


async def test_two_workers_share_one_port_and_one_lifecycle(tmp_path: Path) -> None:
    records = tmp_path / "records"
    config = tmp_path / "patter.yaml"
    config.write_text(CONFIG.format(records=records))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    with notify, run_daemon(config, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}) as daemon:
        # One READY=1 for the service, sent once both workers serve.
        ready = datagrams(notify, lambda got: any("READY=1" in m for m in got))
        assert sum("READY=1" in m for m in ready) == 1
        both = workers(daemon)
        assert [w["worker"] for w in both] == [1, 2]
        assert all(w["state"] == "serving" for w in both)
        pids = {w["worker"]: w["pid"] for w in both}
        assert len(set(pids.values())) == 2 and daemon.proc.pid not in pids.values()
        run_dir = Path(daemon.wait_log(lambda e: e.get("event") == "starting workers")["run_dir"])

        # A call on each worker; /metrics on the shared port counts both.
        for index in (1, 2):
            async with worker_session(run_dir, index) as session:
                call_id, ws = await start_call(session)
                holder = wait_until(lambda: live_calls(daemon).get(call_id), what="the live call")  # noqa: B023
                assert holder == index
                await end_call(ws)
            wait_until(lambda: record_status(records, call_id) == "completed", what="the record")  # noqa: B023
        wait_until(
            lambda: (
                metric(daemon.request("GET", "/metrics")[1], "patterd_calls_total", status="completed") == 2
            ),
            what="both workers' calls in /metrics",
        )
        wait_until(  # each worker's live counters reach the shared files (within a second)
            lambda: (
                metric(daemon.request("GET", "/metrics")[1], "patterd_media_frames_total", direction="in")
                >= 2
            ),
            what="both workers' media frames in /metrics",
        )
        # Worker 2 lists worker 1's call too (one records tree and index). The index row is written by
        # worker 1's record writer after the record, and held back while a history load runs, so poll.
        listed: list[str] = []
        deadline = time.monotonic() + 30.0
        async with worker_session(run_dir, 2) as session:
            while len(listed) < 2 and time.monotonic() < deadline:
                async with session.get("http://worker/api/v1/calls") as resp:
                    listed = [c["call_id"] for c in (await resp.json())["calls"]]
                if len(listed) < 2:
                    await asyncio.sleep(0.05)
        assert len(listed) == 2, listed

        # The answer from worker 1, the media socket on worker 2: admitted by the call token signed with
        # the one secret the supervisor gave every worker.
        async with worker_session(run_dir, 1) as answering, worker_session(run_dir, 2) as media:
            async with answering.post("http://worker/webhooks/local/voice", json={}) as resp:
                assert resp.status == 201, await resp.text()
                answer = await resp.json()
            assert "call_token=" in answer["media_path"]
            ws = await media.ws_connect("ws://worker" + answer["media_path"])
            await ws.send_str(json.dumps({"event": "start"}))
            await ws.send_str(FRAME)
            split = answer["call_id"]
            assert wait_until(lambda: live_calls(daemon).get(split) == 2, what="the call on worker 2")
            # worker 1 was told: its ringing copy is gone (it would end the call `failed` at its media timeout)
            wait_until(
                lambda: sum(w["live_calls"] for w in workers(daemon)) == 1, what="worker 1's copy gone"
            )
            await end_call(ws)
        wait_until(lambda: record_status(records, split) == "completed", what="the split call's record")

        # Hang-up through worker 1 of a call held by worker 2: passed on to worker 2.
        async with worker_session(run_dir, 2) as holder, worker_session(run_dir, 1) as other:
            call_id, ws = await start_call(holder)
            wait_until(lambda: call_id in live_calls(daemon), what="the live call")
            async with other.post(f"http://worker/api/v1/calls/{call_id}/hangup") as resp:
                assert resp.status == 202, await resp.text()
            wait_until(
                lambda: record_status(records, call_id) is not None and call_id not in live_calls(daemon)
            )
            await ws.close()

        # Reload through the API of worker 1: worker 2 reloads too; SIGHUP to the supervisor: both again.
        async with worker_session(run_dir, 1) as session:
            async with session.post("http://worker/api/v1/reload") as resp:
                assert resp.status == 200, await resp.text()

        def gens() -> list[int]:
            return [w.get("config_generation", -1) for w in workers(daemon)]

        wait_until(lambda: gens() == [1, 1], what="generation 1 on both workers")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: gens() == [2, 2], what="generation 2 on both workers")

        # A live call on worker 1 survives worker 2 being killed and replaced.
        async with worker_session(run_dir, 1) as session:
            call_id, ws = await start_call(session)
            wait_until(lambda: call_id in live_calls(daemon), what="the live call")
            ended = metric(daemon.request("GET", "/metrics")[1], "patterd_calls_total", status="completed")
            os.kill(pids[2], signal.SIGKILL)
            daemon.wait_log(
                lambda e: e.get("event") == "worker replaced" and e.get("worker") == 2, timeout=60
            )

            def replacement() -> dict[int, dict[str, Any]] | None:
                now = {w["worker"]: w for w in workers(daemon)}
                return now if now[2].get("state") == "serving" else None  # its socket may take a moment

            replaced = wait_until(replacement, what="the replacement worker serving")
            assert replaced[2]["pid"] != pids[2]
            assert replaced[1]["pid"] == pids[1]
            # The replacement's start-up hydrate walked the shared tree and left worker 1's live
            # call's open record alone (it used to mark it `failed` on disk: "daemon stopped during call").
            await history_loaded(run_dir, 2)
            assert record_status(records, call_id) in ("ringing", "in_progress")
            await ws.send_str(FRAME)
            assert live_calls(daemon).get(call_id) == 1
            # The dead worker's counts stay in the sums.
            text = daemon.request("GET", "/metrics")[1]
            assert metric(text, "patterd_calls_total", status="completed") == ended >= 2
            assert metric(text, "patterd_active_calls", agent="alpha") == 1

            # SIGTERM drains every worker: not ready, the live call holds the supervisor open.
            daemon.proc.send_signal(signal.SIGTERM)
            datagrams(notify, lambda got: any("STOPPING=1" in m for m in got))
            wait_until(lambda: daemon.request("GET", "/readyz")[0] == 503, what="not ready while draining")
            assert daemon.proc.poll() is None
            await end_call(ws)
            code = await asyncio.to_thread(daemon.proc.wait, 60)
        assert code == 0
        assert record_status(records, call_id) == "completed"
        assert not run_dir.exists()  # the supervisor removed its sockets and metrics files


def test_workers_drain_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(CONFIG.format(records=tmp_path / "records"))
    with run_daemon(config) as daemon:
        pids = [w["pid"] for w in workers(daemon)]
        assert len(pids) == 2
        daemon.proc.kill()  # no SIGTERM forwarded: the workers see their pipe to the supervisor close
        daemon.proc.wait(10)
        for index in (1, 2):
            daemon.wait_log(
                lambda e, i=index: e.get("event") == "supervisor gone: draining" and e.get("worker") == i,
                timeout=30,
            )

        def gone() -> bool:
            return all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids)

        wait_until(gone, what="both workers to exit")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
