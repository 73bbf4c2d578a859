"""Optional OpenTelemetry traces: a span per call, a child span per agent turn; a no-op without the SDK.

Enabled when `opentelemetry-sdk` (and the OTLP HTTP exporter) is installed and
`OTEL_EXPORTER_OTLP_ENDPOINT` is set; the standard `OTEL_*` variables configure the exporter.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import structlog

from patterd.protocols.events import (
    TURN_STAGES,
    BargeIn,
    CallEnded,
    CallEvent,
    CallFailed,
    CallStarted,
    ToolCalled,
    TranscriptLine,
)

log = structlog.get_logger("patterd.tracing")


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


class CallTracer:
    """A call-event observer that turns calls into spans with a given OpenTelemetry tracer."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self._calls: dict[str, Any] = {}

    def observe(self, event: CallEvent) -> None:
        """Start, annotate and end spans from call events."""
        from opentelemetry import trace

        kind = type(event)
        if kind is CallStarted:
            assert isinstance(event, CallStarted)
            self._calls[event.call_id] = self.tracer.start_span(
                "call",
                start_time=_ns(event.ts),
                attributes={
                    "patterd.call_id": event.call_id,
                    "patterd.agent": event.agent,
                    "patterd.carrier": event.carrier,
                    "patterd.direction": event.direction,
                    "patterd.trace_id": event.trace_id,
                },
            )
            return
        span = self._calls.get(event.call_id)
        if span is None:
            return
        if kind is TranscriptLine:
            assert isinstance(event, TranscriptLine)
            if event.role == "assistant" and event.latency_ms is not None:
                end = _ns(event.ts)
                context = trace.set_span_in_context(span)
                turn = self.tracer.start_span(
                    "turn", context=context, start_time=end - int(event.latency_ms * 1_000_000)
                )
                for name in ("latency_ms", *(key for key, _ in TURN_STAGES)):
                    value = getattr(event, name)
                    if value is not None:
                        turn.set_attribute(f"patterd.{name}", value)
                turn.set_attribute("patterd.interrupted", event.interrupted)
                turn.end(end_time=end)
        elif kind is ToolCalled:
            assert isinstance(event, ToolCalled)
            span.add_event(
                "tool_call", {"name": event.name, "error": event.error or ""}, timestamp=_ns(event.ts)
            )
        elif kind is BargeIn:
            span.add_event("barge_in", timestamp=_ns(event.ts))
        elif kind is CallFailed:
            assert isinstance(event, CallFailed)
            span.add_event(
                "error", {"message": event.message, "component": event.component}, timestamp=_ns(event.ts)
            )
        elif kind is CallEnded:
            assert isinstance(event, CallEnded)
            span.set_attribute("patterd.status", event.status)
            if event.status == "failed":
                span.set_status(trace.Status(trace.StatusCode.ERROR, event.error or event.reason))
            span.end(end_time=_ns(event.ts))
            del self._calls[event.call_id]


def tracer_from_environment(service_version: str) -> CallTracer | None:
    """A CallTracer exporting over OTLP when configured and installed, else None (tracing off)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-sdk is not installed: tracing is off"
        )
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": "patterd", "service.version": service_version})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing on", endpoint=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    return CallTracer(provider.get_tracer("patterd"))
