"""OpenTelemetry: a span per call with a child span per turn; off unless configured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from patterd.protocols.events import CallEnded, CallStarted, ToolCalled, TranscriptLine
from patterd.tracing import CallTracer, tracer_from_environment

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


def test_spans_per_call_and_turn() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = CallTracer(provider.get_tracer("test"))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    tracer.observe(CallStarted("c1", t0, agent="desk", carrier="twilio", direction="inbound"))
    tracer.observe(TranscriptLine("c1", t0 + timedelta(seconds=2), role="user", text="hi"))
    tracer.observe(
        TranscriptLine("c1", t0 + timedelta(seconds=3), role="assistant", text="hello", latency_ms=400.0)
    )
    tracer.observe(ToolCalled("c1", t0 + timedelta(seconds=4), name="end_call"))
    tracer.observe(CallEnded("c1", t0 + timedelta(seconds=5), status="completed"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call, turn = spans["call"], spans["turn"]
    assert turn.parent is not None and turn.parent.span_id == call.context.span_id
    assert (turn.end_time - turn.start_time) == 400_000_000
    assert turn.attributes["patterd.latency_ms"] == 400.0
    assert call.attributes["patterd.status"] == "completed" and call.attributes["patterd.agent"] == "desk"
    assert [e.name for e in call.events] == ["tool_call"]
    assert (call.end_time - call.start_time) == 5_000_000_000


def test_off_without_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert tracer_from_environment("1") is None


def test_on_with_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    tracer = tracer_from_environment("1")
    assert tracer is not None
