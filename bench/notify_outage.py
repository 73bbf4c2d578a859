"""Fleet notify through an outage: a sender daemon keeps taking calls while its central patterd is down for
`--outage-secs` (default 30), then every event must reach the restarted central once, in order.

    python bench/notify_outage.py [--outage-secs 30] [--retry-max-secs 5]

Real daemons over loopback (tests/notify/fleet.py): softphone calls on the sender (the agent greets, the
caller hangs up), the central stopped with SIGTERM and started again on the same port and records.
Two calls are live across the outage: one begun before the stop and ended during it, one begun during it
and ended after the restart. Prints one JSON object: calls, events, retries, the deepest queue, seconds to
deliver after the restart, and whether the central's records equal the sender's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.daemon_process import run_daemon
from tests.notify.fleet import (
    TOKEN,
    central_config,
    hang_up,
    notify_metrics,
    open_call,
    record,
    sender_config,
    softphone_call,
    wait_delivered,
)


async def bench(outage_secs: float, retry_max_secs: float) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with run_daemon(central_config(root), token=TOKEN) as central:
            port = urlparse(central.base_url).port
            assert port is not None
            with run_daemon(sender_config(root, central.base_url, retry_max_secs=retry_max_secs)) as sender:
                async with aiohttp.ClientSession() as session:
                    calls = [await softphone_call(session, sender.base_url) for _ in range(3)]
                    await wait_delivered(sender, central, calls, timeout=30)
                    # Live across the central's stop: begun (and its greeting delivered) before, ended during.
                    before, before_ws = await open_call(session, sender.base_url)
                    calls.append(before)
                    while not record(central, before).get("transcript"):
                        await asyncio.sleep(0.1)
                    assert central.stop() == 0
                    await hang_up(before_ws)
                    down_at = time.monotonic()
                    deepest = 0.0
                    during = 0
                    while time.monotonic() - down_at < outage_secs:  # calls go on while the central is away
                        calls.append(await softphone_call(session, sender.base_url))
                        during += 1
                        deepest = max(deepest, notify_metrics(sender)["patterd_fleet_notify_queue_depth"])
                    # Live across the restart: begun during the outage, ended once the central is back.
                    across, across_ws = await open_call(session, sender.base_url)
                    calls.append(across)
                    outage = time.monotonic() - down_at
                    restart_at = time.monotonic()
                    with run_daemon(central_config(root), token=TOKEN, port=port) as back:
                        up_at = time.monotonic()
                        await hang_up(across_ws)
                        took = await wait_delivered(sender, back, calls, timeout=120)
                        final = notify_metrics(sender)
                        events = sum(
                            len(record(sender, c)["events"]) + len(record(sender, c)["transcript"])
                            for c in calls
                        )
                        listed = back.request("GET", "/api/v1/calls?limit=200")[1]["calls"]
                        keys = ("status", "turns", "duration_ms", "started_at", "ended_at", "caller", "error")
                        same_metadata = all(
                            record(sender, c)["metadata"][k] == record(back, c)["metadata"][k]
                            for c in calls
                            for k in keys
                        )
                        return {
                            "outage_secs": round(outage, 1),
                            "calls": len(calls),
                            "calls_during_outage": during,
                            "events_stored_on_sender": events,
                            "events_sent": int(final["patterd_fleet_notify_events:sent"]),
                            "events_dropped": int(final["patterd_fleet_notify_events:dropped"]),
                            "failed_posts": int(final["patterd_fleet_notify_failures"]),
                            "deepest_queue": int(deepest),
                            "calls_listed_on_central": len(listed),
                            "same_lines_in_order_no_duplicates": True,  # wait_delivered compared every line
                            "same_metadata": same_metadata,
                            "central_start_secs": round(up_at - restart_at, 2),
                            "serving_to_all_delivered_secs": round(took, 2),
                        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-secs", type=float, default=30.0)
    parser.add_argument("--retry-max-secs", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.outage_secs, args.retry_max_secs)), indent=2))


if __name__ == "__main__":
    main()
