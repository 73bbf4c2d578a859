"""Builds the fleet notifier from `dashboard:` and the environment, and shows its counters on /metrics."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from patterd.config import Config
from patterd.metrics import Metrics
from patterd.notify.sender import (
    ENV_SWITCH,
    FleetNotifier,
    NotifyCounters,
    default_source,
    notify_switched_off,
)
from patterd.redact import check_mode, redact_url

log = structlog.get_logger("patterd.notify")


class _NotifyCollector(Collector):
    def __init__(self, counters: NotifyCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterable[Metric]:
        events = CounterMetricFamily(
            "patterd_fleet_notify_events",
            "Call events for the central dashboard: sent (acknowledged) or dropped (queue full, or refused)",
            labels=["result"],
        )
        events.add_metric(["sent"], self.counters.sent)
        events.add_metric(["dropped"], self.counters.dropped)
        yield events
        yield CounterMetricFamily(
            "patterd_fleet_notify_failures",
            "POSTs to the central dashboard that failed (their events stay queued and are retried)",
            value=self.counters.failed,
        )
        yield GaugeMetricFamily(
            "patterd_fleet_notify_queue_depth",
            "Call events waiting for the central dashboard",
            value=self.counters.queued,
        )


def fleet_notifier(
    config: Config, metrics: Metrics | None = None, environ: Mapping[str, str] = os.environ
) -> FleetNotifier | None:
    """The notifier `dashboard.notify_url` asks for, or None (not configured, or switched off by the environment)."""
    section = config.dashboard
    if section.notify_url is None:
        return None
    if notify_switched_off(environ):  # the local dashboard is untouched: only the POST is off
        log.info(f"{ENV_SWITCH} is off: calls are not reported", url=redact_url(section.notify_url))
        return None
    notifier = FleetNotifier(
        section.notify_url,
        token=section.notify_token.get_secret_value() if section.notify_token else None,
        source=section.source or default_source(),
        redact=check_mode(config.logging.redact_phone),
        max_queue=section.notify_queue,
        retry_max_secs=section.notify_retry_max_secs,
    )
    if (
        metrics is not None and metrics.multiprocess_dir is None
    ):  # a worker's collector would show one worker only
        metrics.registry.register(_NotifyCollector(notifier.counters))
    return notifier
