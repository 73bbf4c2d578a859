"""The C load generator (bench/loadgen.c) against real targets: the workers bench's calls, turn_latency's turn mode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import loadgen, turn_c
from bench.load_common import trimmed_speech

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("gcc") is None, reason="the C load generator needs gcc"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator compiled once for this module, warnings as errors (-std=c11 -O2 -Wall -Wextra)."""
    return loadgen.build(tmp_path_factory.mktemp("loadgen"), werror=True)


def test_builds_without_warnings(built: Path) -> None:
    assert built.stat().st_size > 0


async def test_two_callers_through_a_real_daemon(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loadgen, "CACHE", built.parent)
    # A short line and a short greeting wait keep the level to a few seconds: one measured turn per call.
    speech = trimmed_speech("Hello there.")
    row = await loadgen.run_level(2, 3.0, 0.3, speech, None, settle_secs=2.0, greeting_secs=2.0)
    assert row["errors"] == 0, row["error_samples"]
    assert row["engine_connections"] == 2
    # Every 20 ms frame a caller sent reached the engine as an append: about 50 a second per call.
    assert row["engine_appends"] > 2 * 50 * 3
    assert row["turns"] >= 2
    # A turn's latency is the engine's 500 ms end-of-turn silence plus what the daemon added.
    assert 0 < row["added_p50_ms"] < 1000
    assert row["late_p99_ms"] < 1000
    assert 0 < row["gen_cpu_pct"] < 50


async def test_turn_mode_drives_the_relay_floor(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bench/turn_latency.py's C harness: the engine in μ-law as the bare relay asks, turns measured from
    # the rule-completing frame, reply jitter and late frames counted. Figures present; no timing asserted.
    monkeypatch.setattr(loadgen, "CACHE", built.parent)
    speech = trimmed_speech("Hello there.")
    row = await turn_c.run_level("relay", 2, 3.0, 0.3, speech, settle_secs=2.0, greeting_secs=2.0)
    assert row["errors"] == 0, row["error_samples"]
    assert row["generator"] == "c" and row["engine_connections"] == 2
    # The relay passes the callers' μ-law through: one 160-byte append per 20 ms frame.
    assert row["engine_appends"] > 2 * 50 * 3
    assert row["engine_audio_bytes"] == 160 * row["engine_appends"]
    assert row["turns"] >= 2
    # About 2.1 s of reply per turn in 20 ms frames, each gap giving a jitter sample.
    assert row["reply_frames"] >= row["turns"] * 90
    assert 0 <= row["late_frames"] <= row["reply_frames"]
    for key in ("added_p50_ms", "added_p99_ms", "jitter_p50_ms", "jitter_p99_ms", "cpu_pct_per_call"):
        assert row[key] == row[key] and row[key] >= 0, (key, row[key])  # present, not NaN
