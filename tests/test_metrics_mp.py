"""metrics_mp: two workers' metrics files summed into one exposition; a dead worker's live gauge drops out."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import multiprocess, values

from patterd.metrics import LiveCounters, Metrics
from tests.workers.test_supervisor import metric


def test_two_workers_sum_and_a_dead_one_leaves_its_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = {"now": 101}
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    # Each "worker" writes its own files, as separate processes would (the library names them by pid).
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid["now"]))
    first = Metrics(
        "1.0",
        LiveCounters(media_frames=lambda: (5, 7), active_calls=lambda: {"alpha": 2}, store_errors=lambda: 1),
        multiprocess_dir=str(tmp_path),
    )
    first.calls.labels("alpha", "local", "inbound", "completed").inc()
    assert first.live_sync is not None
    first.live_sync.sync()
    first.live_sync.sync()  # again: counters grow by what changed, not by the total once more

    pid["now"] = 102
    second = Metrics(
        "1.0",
        LiveCounters(media_frames=lambda: (1, 1), active_calls=lambda: {"alpha": 1}),
        multiprocess_dir=str(tmp_path),
    )
    second.calls.labels("alpha", "local", "inbound", "completed").inc(2)
    text = second.render().decode()  # syncs the scraped worker's own live counters first
    assert metric(text, "patterd_calls_total", status="completed") == 3
    assert metric(text, "patterd_media_frames_total", direction="in") == 6
    assert metric(text, "patterd_media_frames_total", direction="out") == 8
    assert metric(text, "patterd_store_errors_total") == 1
    assert metric(text, "patterd_active_calls", agent="alpha") == 3
    assert metric(text, "patterd_info", version="1.0") == 1
    assert "process_cpu_seconds_total" not in text  # one process's figures would pass for all of them

    multiprocess.mark_process_dead(101, str(tmp_path))  # type: ignore[no-untyped-call]
    text = second.render().decode()
    assert metric(text, "patterd_active_calls", agent="alpha") == 1  # its live calls went with it
    assert metric(text, "patterd_calls_total", status="completed") == 3  # its counts stay


def test_one_process_is_unchanged() -> None:
    text = Metrics("1.0", LiveCounters(media_frames=lambda: (4, 2))).render().decode()
    assert metric(text, "patterd_media_frames_total", direction="in") == 4
    assert "process_cpu_seconds_total" in text
