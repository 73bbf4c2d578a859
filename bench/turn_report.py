"""bench/turn_latency.py's figures: one level's row from its samples, the table, the verdict against issue 14."""

from __future__ import annotations

import os
from typing import Any

from bench.load_common import SATURATED_PCT, SILENCE_MS, pct

FRAME_SECS = 0.02
RULE_FRAMES = SILENCE_MS // 20  # the non-loud frames after the last loud one that end a turn
LATE_MS = 10.0
LISTEN_SECS = (
    2.4  # a caller listens this long from the reply's first frame (the reply is ~2.1 s), then speaks
)
TARGET_P99_MS = 50.0  # the capacity rule: the largest N with added p99 within this and no errors


def make_row(
    kind: str,
    n: int,
    generator: str,
    *,
    added: list[float],
    jitter: list[float],
    late: int,
    frames: int,
    engine_delays: list[float],
    errors: list[str],
    cpu_pct: float,
    fakes_pct: float,
    fake_cores: set[int],
    tick_lag_ms: float,
) -> dict[str, Any]:
    """A level's row; `fakes_saturated` says its latency figures measure the harness, not the target."""
    return {
        "target": kind,
        "generator": generator,
        "calls": n,
        "turns": len(added),
        "added_p50_ms": round(pct(added, 0.5), 1),
        "added_p99_ms": round(pct(added, 0.99), 1),
        "jitter_p50_ms": round(pct(jitter, 0.5), 1),
        "jitter_p99_ms": round(pct(jitter, 0.99), 1),
        "late_frames": late,
        "reply_frames": frames,
        "engine_ms_p50": round(pct(engine_delays, 0.5), 1) if engine_delays else None,
        "errors": len(errors),
        "cpu_pct": round(cpu_pct, 1),
        "cpu_pct_per_call": round(cpu_pct / n, 3),
        "fakes_cpu_pct": round(fakes_pct, 1),
        "fakes_saturated": fakes_pct >= SATURATED_PCT * len(fake_cores) or tick_lag_ms > 20,
        "tick_lag_ms": round(tick_lag_ms, 1),  # how far the callers fell behind their 20 ms send schedule
        "load1": round(os.getloadavg()[0], 1),  # the machine's run queue: others' work shows here
        "error_samples": errors[:3],
    }


NAMES = {
    "relay": "bare relay (floor)",
    "pcmu": "patterd, audio_format: pcmu",
    "pcm": "patterd, audio_format: pcm",
    "pcm-soxr": "patterd, pcm through soxr LQ (before)",
}


def floor_of(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The floor measured beside a row: the relay row at the same calls with the same callers."""
    return next(
        (
            r
            for r in rows
            if r["target"] == "relay" and r["calls"] == row["calls"] and r["generator"] == row["generator"]
        ),
        None,
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown rows ready to paste (ratios against the floor at the same calls)."""
    out = [
        "| target | calls | turns | added p50 / p99 ms | reply jitter p99 ms | late frames | errors "
        "| CPU % | CPU %/call | vs floor: added p50 / p99, CPU/call | callers | fakes CPU % | machine load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = "-"
        floor = floor_of(rows, r)
        if floor is not None and r is not floor:
            ratio = (
                f"{r['added_p50_ms'] / max(floor['added_p50_ms'], 0.1):.1f}× / "
                f"{r['added_p99_ms'] / max(floor['added_p99_ms'], 0.1):.1f}×, "
                f"{r['cpu_pct_per_call'] / max(floor['cpu_pct_per_call'], 1e-3):.2f}×"
            )
        sat = " (fakes saturated)" if r["fakes_saturated"] else ""
        out.append(
            f"| {NAMES[r['target']]} | {r['calls']} | {r['turns']} | {r['added_p50_ms']} / {r['added_p99_ms']} "
            f"| {r['jitter_p99_ms']} | {r['late_frames']} of {r['reply_frames']} | {r['errors']} "
            f"| {r['cpu_pct']}{sat} | {r['cpu_pct_per_call']} | {ratio} | {r['generator']} "
            f"| {r['fakes_cpu_pct']} | {r['load1']} |"
        )
        out += [f"    e.g. {e}" for e in r["error_samples"]]
    return out


def verdict(rows: list[dict[str, Any]], at: int) -> list[str]:
    """The `pcm` row at `at` calls against issue 14's targets, and the largest N within p99 ≤ 50 ms."""
    lines = []
    pcm = next((r for r in rows if r["target"] == "pcm" and r["calls"] == at), None)
    if pcm is not None:
        floor = floor_of(rows, pcm)
        checks = [
            ("added p50 ≤ 3 ms", pcm["added_p50_ms"] <= 3),
            ("added p99 ≤ 10 ms", pcm["added_p99_ms"] <= 10),
            ("reply jitter p99 ≤ 5 ms", pcm["jitter_p99_ms"] <= 5),
            ("0 late frames", pcm["late_frames"] == 0),
        ]
        if floor is not None:
            ratio = pcm["cpu_pct_per_call"] / max(floor["cpu_pct_per_call"], 1e-3)
            checks.append((f"CPU per call ≤ 2× the floor's ({ratio:.2f}×)", ratio <= 2))
        lines.append(f"targets for pcm at {at} calls:")
        lines += [f"  {name}: {'met' if ok else 'MISSED'}" for name, ok in checks]
    fit = [
        r
        for r in rows
        if r["target"] == "pcm"
        and r["errors"] == 0
        and r["added_p99_ms"] <= TARGET_P99_MS
        and not r["fakes_saturated"]
    ]
    tested = [r["calls"] for r in rows if r["target"] == "pcm"]
    if fit:
        best = max(r["calls"] for r in fit)
        beyond = any(c > best for c in tested)
        lines.append(
            f"largest concurrency with pcm within added p99 ≤ {TARGET_P99_MS:g} ms and 0 errors: "
            f"{best if beyond else f'≥ {best}'} (tested {', '.join(map(str, tested))})"
        )
    return lines
