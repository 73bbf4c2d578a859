"""The central side of a fleet: applies other daemons' call events to this daemon's records and live feed, once each."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from patterd.notify.wire import MAX_SOURCE, WireError, WireEvent, decode
from patterd.protocols.events import CallEvent

MAX_EVENTS_PER_POST = 1000
MAX_TRACKED_CALLS = 20_000
_SOURCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._@-]*$")


class Records(Protocol):
    """What the receiver needs of a record store (every backend has it; `resume` where it can)."""

    def handle(self, event: CallEvent) -> None: ...

    def get_call(self, call_id: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Applied:
    """What one POST did."""

    accepted: int
    duplicates: int


def parse_batch(body: object) -> tuple[str, list[WireEvent]]:
    """`{"source": name, "events": [...]}` → (source, decoded events); WireError on anything malformed.

    The whole batch is checked before any of it is applied: a bad batch stores nothing.
    """
    if not isinstance(body, dict):
        raise WireError("the body must be a JSON object {source, events}")
    source = body.get("source")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE or not _SOURCE.match(source):
        raise WireError(
            f"source must name the sending daemon (letters, digits, : . _ @ -; at most {MAX_SOURCE})"
        )
    events = body.get("events")
    if not isinstance(events, list) or not 0 < len(events) <= MAX_EVENTS_PER_POST:
        raise WireError(f"events must be a list of 1..{MAX_EVENTS_PER_POST} events")
    decoded = []
    for index, obj in enumerate(events):
        try:
            decoded.append(decode(obj, source=source))
        except WireError as exc:
            raise WireError(f"events[{index}]: {exc}") from None
    return source, decoded


class FleetReceiver:
    """Applies fleet events to `store` and `publish` (the live feed) in order, skipping sequence numbers seen."""

    def __init__(self, store: Records, publish: Callable[[CallEvent], None]) -> None:
        self.store = store
        self.publish = publish
        self._next: OrderedDict[tuple[str, str], int] = OrderedDict()  # (source, call_id) → next seq
        self.accepted = 0
        self.duplicates = 0

    def apply(self, source: str, events: list[WireEvent]) -> Applied:
        """Apply each event not applied before (a retried batch is skipped where it was already applied)."""
        accepted = duplicates = 0
        for wire in events:
            key = (source, wire.call_id)
            expected = self._next.pop(key, None)
            if expected is None:
                expected = self._stored_lines(wire.call_id)
                resume = getattr(self.store, "resume", None)
                if expected and resume is not None:  # a call that outlived this process: continue its record
                    resume(wire.call_id)
            if wire.seq < expected:
                duplicates += 1
                self._next[key] = expected
                continue
            # A gap (the sender dropped events when its queue overflowed) is accepted: what came is kept.
            self.store.handle(wire.event)
            self.publish(wire.event)
            self._next[key] = wire.seq + 1
            accepted += 1
            if len(self._next) > MAX_TRACKED_CALLS:
                self._next.popitem(last=False)
        self.accepted += accepted
        self.duplicates += duplicates
        return Applied(accepted, duplicates)

    def _stored_lines(self, call_id: str) -> int:
        """A call not seen since this process started: every applied event is one stored line, so the
        lines already stored are the next sequence number (a central restarted mid-retry applies nothing twice)."""
        record: dict[str, Any] | None = self.store.get_call(call_id)
        if record is None:
            return 0
        return len(record.get("transcript") or ()) + len(record.get("events") or ())
