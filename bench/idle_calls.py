"""Silent softphone calls against the shipped offline config: RSS while they are live, and after the idle timeout.

    python bench/idle_calls.py --calls 40 --idle-secs 30      # server.media_idle_timeout_secs = 30
    python bench/idle_calls.py --calls 40 --idle-secs 0       # no timeout: the calls stay live (as before issue 12)

Each call POSTs /webhooks/local/voice, opens WS /ws/local/{id}, sends `start` and then nothing at all (a
browser that froze, a tab left behind). Prints the daemon's RSS before the calls, with them live, and once
they have ended (or, without a timeout, after the same wait), with the live-call count at each point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.procstat import rss_kb  # noqa: E402
from tests.daemon_process import run_daemon  # noqa: E402


def config_text(idle_secs: float, records: Path) -> str:
    text = (ROOT / "config" / "patter.yaml").read_text()
    text = re.sub(
        r"(?m)^server:\n", f"server:\n  media_idle_timeout_secs: {idle_secs}\n  max_calls: 0\n", text
    )
    return text + f"\npersist: {records}\n"


async def live_calls(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/api/v1/status") as resp:
        return len((await resp.json())["live_calls"])


async def settle(http: aiohttp.ClientSession, base: str, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    live = await live_calls(http, base)
    while live != want and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # polling another process
        live = await live_calls(http, base)
    return live


async def one_round(
    http: aiohttp.ClientSession,
    base: str,
    pid: int,
    calls: int,
    idle_secs: float,
    wait: float,
    out: dict[str, float],
) -> None:
    sockets = []
    for _ in range(calls):
        async with http.post(
            f"{base}/webhooks/local/voice", json={}, headers={"X-Patterd-CSRF": "1"}
        ) as resp:
            call_id = (await resp.json())["call_id"]
        ws = await http.ws_connect(f"{base.replace('http://', 'ws://')}/ws/local/{call_id}")
        await ws.send_str(json.dumps({"event": "start", "start": {"format": "mulaw/8000"}}))
        sockets.append(ws)
    out["live_after_connect"] = await settle(http, base, calls, 30)
    await asyncio.sleep(8)  # greetings synthesised and sent
    out["rss_live_mb"] = rss_kb(pid) / 1024
    await asyncio.sleep(wait)
    out["live_after_wait"] = await settle(http, base, 0, 10) if idle_secs else await live_calls(http, base)
    await asyncio.sleep(2)
    out["rss_after_wait_mb"] = rss_kb(pid) / 1024
    for ws in sockets:
        await ws.close()


async def measure(
    base: str, pid: int, calls: int, idle_secs: float, wait: float, rounds: int
) -> list[dict[str, float]]:
    async with aiohttp.ClientSession() as http:
        await asyncio.sleep(2)  # let start-up allocations settle
        before = rss_kb(pid) / 1024
        results = []
        for _ in range(rounds):  # later rounds tell a leak (RSS keeps growing) from allocator reuse
            out: dict[str, float] = {"rss_before_mb": before}
            await one_round(http, base, pid, calls, idle_secs, wait, out)
            out["per_call_live_mb"] = (out["rss_live_mb"] - before) / calls
            out["per_call_after_wait_mb"] = (out["rss_after_wait_mb"] - before) / calls
            results.append(out)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--idle-secs", type=float, default=30.0)
    parser.add_argument("--wait", type=float, default=None, help="seconds to wait after the calls are live")
    parser.add_argument("--rounds", type=int, default=1, help="batches of calls, one after the other")
    args = parser.parse_args()
    wait = args.wait if args.wait is not None else (args.idle_secs or 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "patter.yaml"
        path.write_text(config_text(args.idle_secs, Path(tmp) / "records"))
        with run_daemon(path) as daemon:
            results = asyncio.run(
                measure(daemon.base_url, daemon.proc.pid, args.calls, args.idle_secs, wait, args.rounds)
            )
    for i, result in enumerate(results, 1):
        rounded = {k: round(v, 2) for k, v in result.items()}
        print(json.dumps({"round": i, "calls": args.calls, "idle_secs": args.idle_secs, **rounded}))


if __name__ == "__main__":
    main()
