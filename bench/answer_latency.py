"""What writing a call's record durably before the answer costs: voice-webhook latency of a real daemon.

Run: `python bench/answer_latency.py [--calls 300] [--concurrency 1] [--cwd DIR] [--json]`.

Starts the real `patterd` (tests/daemon_process.py) with the softphone carrier, an offline agent and
`persist:` in a temporary directory, then POSTs `/webhooks/local/voice` `--calls` times (each answer
creates a call whose metadata.json is written before the 201 since issue 12; the calls never open
media) and prints p50/p95/p99/max of the answer latency measured at the client. `--cwd DIR` runs the
daemon from another checkout (e.g. `git archive HEAD~1 | tar -x -C /tmp/old`) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.daemon_process import run_daemon  # noqa: E402

CONFIG = """carrier: {{type: local}}
persist: {records}
logging: {{level: warning, retention_days: 0}}
agents:
  - name: desk
    stt: {{type: offline}}
    llm: {{type: script}}
    tts: {{type: offline}}
"""


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank q-quantile (0..1) of sorted samples."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def measure(base_url: str, calls: int, concurrency: int) -> list[float]:
    samples: list[float] = []
    left = iter(range(calls))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in left:
            began = time.perf_counter()
            async with session.post(base_url + "/webhooks/local/voice", json={}) as resp:
                await resp.read()
                if resp.status != 201:
                    raise SystemExit(f"the webhook answered {resp.status}")
            samples.append((time.perf_counter() - began) * 1000)

    async with aiohttp.ClientSession() as session:
        for _ in range(10):  # warm-up: first requests pay for imports and connections
            async with session.post(base_url + "/webhooks/local/voice", json={}) as resp:
                await resp.read()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--cwd", type=Path, help="run the daemon from this checkout")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patterd-answer-") as work:
        config = Path(work) / "patter.yaml"
        config.write_text(CONFIG.format(records=Path(work) / "records"))
        with run_daemon(config, cwd=args.cwd) as daemon:
            samples = asyncio.run(measure(daemon.base_url, args.calls, args.concurrency))
    ordered = sorted(samples)
    result: dict[str, Any] = {
        "calls": len(ordered),
        "concurrency": args.concurrency,
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(percentile(ordered, 0.95), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['calls']} answers, concurrency {result['concurrency']}: p50 {result['p50_ms']} ms, "
            f"p95 {result['p95_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
