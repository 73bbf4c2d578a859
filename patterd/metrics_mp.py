"""Metrics of every worker in one exposition: prometheus-client's multiprocess mode (`server.workers: N`).

Counters and histograms fed by call events are written to files in $PROMETHEUS_MULTIPROC_DIR by the
library itself. The scrape-time live counters (media frames, refusals, live calls) live in plain ints
on the hot path; `LiveSync` copies them into multiprocess metrics (counters by their increase, the live
calls as a `livesum` gauge that disappears with its process) at every scrape and once a second.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from patterd.metrics import CLUSTER_ERRORS_HELP, LiveCounters

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ENV = "PATTERD_WORKER"
SYNC_INTERVAL_SECS = 1.0  # how stale another worker's live counters may be in a scrape


def multiprocess_dir() -> str | None:
    """The shared metrics directory when this process is a worker of a supervisor, else None."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.environ.get(WORKER_ENV) and os.path.isdir(path) else None


class _Counts:
    """A multiprocess counter fed from an absolute count: increments by what grew since the last sync."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.seen: dict[tuple[str, ...], float] = {}

    def sync(self, values: Mapping[Any, float]) -> None:  # label values tuple → count
        for labels, value in values.items():
            grown = value - self.seen.get(labels, 0.0)
            if grown > 0:
                (self.counter.labels(*labels) if labels else self.counter).inc(grown)
                self.seen[labels] = value


class LiveSync:
    """Copies `LiveCounters` into multiprocess metric files."""

    def __init__(self, live: LiveCounters, registry: CollectorRegistry) -> None:
        self.live = live
        self.frames = _Counts(
            Counter("patterd_media_frames", "Media frames relayed", ["direction"], registry=registry)
        )
        self.dropped = _Counts(
            Counter(
                "patterd_media_frames_dropped",
                "Media frames dropped (malformed, oversized, out of place); the call goes on",
                ["carrier", "reason"],
                registry=registry,
            )
        )
        self.refused = _Counts(
            Counter(
                "patterd_calls_refused",
                "New calls refused (draining, or server.max_calls live)",
                ["carrier", "reason"],
                registry=registry,
            )
        )
        self.rejected = _Counts(
            Counter(
                "patterd_webhook_rejections",
                "Refused carrier webhooks and websockets",
                ["carrier", "reason"],
                registry=registry,
            )
        )
        self.store_errors = _Counts(
            Counter("patterd_store_errors", "Call record writes that failed", registry=registry)
        )
        self.cluster_errors = _Counts(
            Counter("patterd_cluster_redis_errors", CLUSTER_ERRORS_HELP, registry=registry)
        )
        self.active = Gauge(
            "patterd_active_calls",
            "Calls in progress",
            ["agent"],
            multiprocess_mode="livesum",  # a dead worker's calls are not live any more
            registry=registry,
        )
        self._agents: set[str] = set()

    def sync(self) -> None:
        """Bring the files up to this process's live counters."""
        frames_in, frames_out = self.live.media_frames()
        self.frames.sync({("in",): frames_in, ("out",): frames_out})
        self.dropped.sync(self.live.frames_dropped())
        self.refused.sync(self.live.calls_refused())
        self.rejected.sync(self.live.rejections())
        self.store_errors.sync({(): float(self.live.store_errors())})
        self.cluster_errors.sync({(): float(self.live.cluster_errors())})
        active = dict(self.live.active_calls())
        for agent in self._agents | set(active):
            self.active.labels(agent).set(active.get(agent, 0))  # an agent with no call left shows 0
        self._agents |= set(active)


class _BuildInfo(Collector):
    """`patterd_info{version}` (Info metrics have no multiprocess mode; every worker runs one build)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def collect(self) -> Iterable[Metric]:
        info = InfoMetricFamily("patterd", "patterd build information")
        info.add_metric([], {"version": self.version})
        yield info


def render_multiprocess(path: str, version: str) -> bytes:
    """Every worker's metrics (sums of counters and histograms, live gauges of the living), as text."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    registry.register(_BuildInfo(version))
    return bytes(generate_latest(registry))
