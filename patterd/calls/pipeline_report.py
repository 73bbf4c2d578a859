"""What the pipeline reports to its call: usage, provider failures and fallbacks, as call events."""

from __future__ import annotations

from typing import Literal

import structlog

from patterd.errors import ProviderError
from patterd.protocols.events import CallFailed, Usage
from patterd.providers.kinds import CallContext

log = structlog.get_logger("patterd.calls.pipeline")

Component = Literal["stt", "tts", "llm"]


def emit_usage(ctx: CallContext, component: Component, provider: str, quantities: dict[str, float]) -> None:
    """A Usage event for the call's cost."""
    ctx.emit(Usage(**ctx.new_event_fields(), component=component, provider=provider, quantities=quantities))


def report_failure(ctx: CallContext, component: str, exc: ProviderError) -> None:
    """A provider failed; the call goes on (a non-fatal CallFailed)."""
    log.warning("pipeline provider error", component=component, error=str(exc))
    ctx.emit(CallFailed(**ctx.new_event_fields(), component=component, message=str(exc), fatal=False))


def rounded(value: float | None) -> float | None:
    """A stage time to 0.1 ms, as records keep them."""
    return None if value is None else round(value, 1)
