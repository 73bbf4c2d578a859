"""Prometheus metrics: one registry per daemon, fed by call events and read from live counters at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from patterd.protocols.events import (
    TURN_STAGES,
    AgentAudioStarted,
    BargeIn,
    CallEnded,
    CallEvent,
    CallFailed,
    CallStarted,
    ProviderFallback,
    TranscriptLine,
    TurnHeard,
)

if TYPE_CHECKING:
    from patterd.metrics_mp import LiveSync

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Stages are smaller than whole turns: transport and TTS take a few ms, endpointing hundreds.
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


CLUSTER_ERRORS_HELP = "Failed Redis operations of the cluster's shared live state (it is local meanwhile)"


@dataclass
class LiveCounters:
    """Callables the collector reads at scrape time (counters kept as plain ints on the hot path)."""

    media_frames: Callable[[], tuple[int, int]] = lambda: (0, 0)
    frames_dropped: Callable[[], Mapping[tuple[str, str], int]] = dict  # (carrier, reason) → count
    calls_refused: Callable[[], Mapping[tuple[str, str], int]] = dict  # (carrier, reason) → count
    rejections: Callable[[], Mapping[tuple[str, str], int]] = dict
    store_errors: Callable[[], int] = lambda: 0
    cluster_errors: Callable[[], int] = lambda: 0  # failed Redis operations of cluster.redis
    active_calls: Callable[[], Mapping[str, int]] = dict
    extra: dict[str, Any] = field(default_factory=dict)


class _LiveCollector(Collector):
    def __init__(self, live: LiveCounters) -> None:
        self.live = live

    def collect(self) -> Iterable[Metric]:
        frames = CounterMetricFamily("patterd_media_frames", "Media frames relayed", labels=["direction"])
        frames_in, frames_out = self.live.media_frames()
        frames.add_metric(["in"], frames_in)
        frames.add_metric(["out"], frames_out)
        yield frames
        dropped = CounterMetricFamily(
            "patterd_media_frames_dropped",
            "Media frames dropped (malformed, oversized, out of place); the call goes on",
            labels=["carrier", "reason"],
        )
        for (carrier, reason), count in sorted(self.live.frames_dropped().items()):
            dropped.add_metric([carrier, reason], count)
        yield dropped
        refused = CounterMetricFamily(
            "patterd_calls_refused",
            "New calls refused (draining, or server.max_calls live)",
            labels=["carrier", "reason"],
        )
        for (carrier, reason), count in sorted(self.live.calls_refused().items()):
            refused.add_metric([carrier, reason], count)
        yield refused
        rejected = CounterMetricFamily(
            "patterd_webhook_rejections",
            "Refused carrier webhooks and websockets",
            labels=["carrier", "reason"],
        )
        for (carrier, reason), count in sorted(self.live.rejections().items()):
            rejected.add_metric([carrier, reason], count)
        yield rejected
        yield CounterMetricFamily(
            "patterd_store_errors", "Call record writes that failed", value=self.live.store_errors()
        )
        yield CounterMetricFamily(
            "patterd_cluster_redis_errors", CLUSTER_ERRORS_HELP, value=self.live.cluster_errors()
        )
        active = GaugeMetricFamily("patterd_active_calls", "Calls in progress", labels=["agent"])
        for agent, count in sorted(self.live.active_calls().items()):
            active.add_metric([agent], count)
        yield active


class Metrics:
    """The daemon's metrics; `observe` is a call-event observer."""

    def __init__(
        self, version: str, live: LiveCounters | None = None, *, multiprocess_dir: str | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.version = version
        self.live = live or LiveCounters()
        self.multiprocess_dir = multiprocess_dir
        self.live_sync: LiveSync | None = None
        if multiprocess_dir is None:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self.registry.register(_LiveCollector(self.live))
            Info("patterd", "patterd build information", registry=self.registry).info({"version": version})
        else:  # a worker: metrics go to the shared files; per-process collectors would show one worker only
            from patterd.metrics_mp import LiveSync

            self.live_sync = LiveSync(self.live, self.registry)
        self.reloads = Counter("patterd_reloads", "Config reloads", ["result"], registry=self.registry)
        self.config_errors = Counter(
            "patterd_config_errors", "Config problems found on load or reload", registry=self.registry
        )
        self.calls = Counter(
            "patterd_calls",
            "Calls ended",
            ["agent", "carrier", "direction", "status"],
            registry=self.registry,
        )
        self.turn_latency = Histogram(
            "patterd_turn_latency_seconds",
            "Caller's last voiced audio to the first agent audio sent to the carrier",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.turn_stage = Histogram(
            "patterd_turn_stage_seconds",
            "One stage of a turn's latency (stages sum to patterd_turn_latency_seconds; network, from callers' "
            "receiver reports, is what the caller heard beyond it)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        # children resolved once: labels() takes a lock and builds a key on every call
        self._stages = [(key, self.turn_stage.labels(stage)) for key, stage in TURN_STAGES]
        # The caller's side (from receiver reports): heard_ms - latency_ms, outside the sum above.
        self._network = self.turn_stage.labels("network")
        self.first_audio = Histogram(
            "patterd_time_to_first_audio_seconds",
            "Call connected to first agent audio",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.barge_ins = Counter("patterd_barge_ins", "Caller barge-ins", registry=self.registry)
        self.provider_errors = Counter(
            "patterd_provider_errors",
            "Provider failures during calls",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.provider_fallbacks = Counter(
            "patterd_provider_fallbacks",
            "Calls moved to the next provider of a fallback chain",
            ["kind", "from", "to"],
            registry=self.registry,
        )
        self.call_cost = Counter(
            "patterd_call_cost_usd", "Cost of calls in USD", ["agent", "component"], registry=self.registry
        )
        self._calls: dict[str, tuple[str, str, str]] = {}  # call_id → (agent, carrier, direction)

    def observe(self, event: CallEvent) -> None:
        """Update metrics from one call event (cheap, never raises)."""
        kind = type(event)
        if kind is CallStarted:
            assert isinstance(event, CallStarted)
            self._calls[event.call_id] = (event.agent, event.carrier, event.direction)
        elif kind is CallEnded:
            assert isinstance(event, CallEnded)
            agent, carrier, direction = self._calls.pop(event.call_id, ("", "", ""))
            self.calls.labels(agent, carrier, direction, event.status).inc()
        elif kind is TranscriptLine:
            assert isinstance(event, TranscriptLine)
            if event.role == "assistant" and event.latency_ms is not None:
                self.turn_latency.observe(event.latency_ms / 1000)
                for key, histogram in self._stages:
                    value = getattr(event, key)
                    if value is not None:
                        histogram.observe(value / 1000)
                if event.network_ms is not None:
                    self._network.observe(event.network_ms / 1000)
        elif kind is TurnHeard:
            assert isinstance(event, TurnHeard)
            self._network.observe(event.network_ms / 1000)
        elif kind is AgentAudioStarted:
            assert isinstance(event, AgentAudioStarted)
            self.first_audio.observe(event.first_audio_ms / 1000)
        elif kind is BargeIn:
            self.barge_ins.inc()
        elif kind is CallFailed:
            assert isinstance(event, CallFailed)
            self.provider_errors.labels(event.component or "unknown", "runtime").inc()
        elif kind is ProviderFallback:
            assert isinstance(event, ProviderFallback)
            self.provider_fallbacks.labels(event.kind, event.from_provider, event.to_provider).inc()

    def add_cost(self, agent: str, component: str, usd: float) -> None:
        """Count the cost of a finished call's component."""
        if usd > 0:
            self.call_cost.labels(agent, component).inc(usd)

    def count_cost(self, meta: Mapping[str, Any] | None) -> None:
        """Count a finished call's cost per component from its record's metadata."""
        if not meta:
            return
        agent = (meta.get("agent") or {}).get("name", "")
        for component, usd in (meta.get("cost") or {}).items():
            if component != "total" and isinstance(usd, (int, float)):
                self.add_cost(agent, component, float(usd))

    def agent_of(self, call_id: str) -> str:
        """The agent of a live call (for cost attribution)."""
        return self._calls.get(call_id, ("", "", ""))[0]

    def render(self) -> bytes:
        """The Prometheus text exposition (every worker's, under a supervisor)."""
        if self.multiprocess_dir is not None and self.live_sync is not None:
            from patterd.metrics_mp import render_multiprocess

            self.live_sync.sync()
            return render_multiprocess(self.multiprocess_dir, self.version)
        return bytes(generate_latest(self.registry))
