"""The fleet wire format: call events as JSON objects with per-call sequence numbers, and back (validated)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args, get_origin

from patterd.clock import iso_ms
from patterd.protocols import events as ev
from patterd.protocols.events import CallEvent, CallStarted, ProviderFallback
from patterd.protocols.jsontext import clean, clean_text
from patterd.store.records import call_path

MAX_CALL_ID = 128
MAX_SOURCE = 128

# Every call event by its wire `type` (TranscriptPartial is a live view of a reply: never sent).
EVENT_TYPES: dict[str, type[CallEvent]] = {
    cls.type: cls
    for cls in vars(ev).values()
    if isinstance(cls, type) and issubclass(cls, CallEvent) and cls is not CallEvent
}
NOT_SENT: frozenset[type[CallEvent]] = frozenset({ev.TranscriptPartial})


class WireError(ValueError):
    """A wire event that cannot become a call event; the message says why."""


def encode(event: CallEvent, seq: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """One event on the wire; `id` is `<call_id>:<seq>` (what a receiver deduplicates by)."""
    return {
        "id": f"{event.call_id}:{seq}",
        "call_id": event.call_id,
        "seq": seq,
        "type": event.type,
        "ts": iso_ms(event.ts),
        "data": event.data() if data is None else data,
    }


@dataclass(frozen=True)
class WireEvent:
    """A decoded wire event."""

    call_id: str
    seq: int
    event: CallEvent


def parse_ts(value: object) -> datetime:
    """An ISO-8601 time with a zone (`Z` allowed) → an aware UTC datetime."""
    if not isinstance(value, str) or len(value) > 40:
        raise WireError("ts must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WireError(f"ts {value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        raise WireError("ts must carry a time zone")
    return parsed.astimezone(UTC)


def check_call_id(value: object) -> str:
    """A call id that can name a record directory."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CALL_ID:
        raise WireError(f"call_id must be a string of 1..{MAX_CALL_ID} characters")
    try:
        call_path(value, "2000-01-01")
    except ValueError as exc:
        raise WireError(str(exc)) from None
    if clean_text(value) != value or not value.isprintable():
        raise WireError("call_id must be printable text")
    return value


def decode(obj: object, *, source: str = "") -> WireEvent:
    """A wire object → its call event; a CallStarted is tagged with `source`. Raises WireError."""
    if not isinstance(obj, dict):
        raise WireError("each event must be a JSON object")
    call_id = check_call_id(obj.get("call_id"))
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise WireError("seq must be an integer >= 0")
    cls = EVENT_TYPES.get(obj.get("type"))  # type: ignore[arg-type]
    if cls is None or cls in NOT_SENT:
        raise WireError(f"unknown event type {obj.get('type')!r}")
    ts = parse_ts(obj.get("ts"))
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise WireError("data must be a JSON object")
    kwargs = _fields(cls, clean(data))
    if cls is CallStarted:
        kwargs["source"] = source
    try:
        event = cls(call_id=call_id, ts=ts, **kwargs)
    except TypeError as exc:  # a dataclass refusing its arguments: a bug on the sending side
        raise WireError(f"{cls.type}: {exc}") from None
    return WireEvent(call_id, seq, event)


def _fields(cls: type[CallEvent], data: dict[str, Any]) -> dict[str, Any]:
    """The dataclass arguments in `data`, each checked against its annotation; unknown keys are ignored."""
    if cls is ProviderFallback:  # `from`/`to` on the wire (see ProviderFallback.data)
        data = {
            "kind": data.get("kind", "stt"),
            "from_provider": data.get("from", ""),
            "to_provider": data.get("to", ""),
            "reason": data.get("reason", ""),
        }
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in ("call_id", "ts") or f.name not in data:
            continue
        value = data[f.name]
        if not _matches(value, hints[f.name]):
            raise WireError(f"{cls.type}.{f.name}: {value!r:.60} does not fit {hints[f.name]}")
        out[f.name] = value
    return out


def _matches(value: object, hint: Any) -> bool:
    """Whether JSON `value` fits a field annotation (str, bool, int, float, dict, Literal, unions, None)."""
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        args = get_args(hint)
        if len(args) == 2 and args[1] is float:  # Usage.quantities
            return all(_matches(v, float) for v in value.values())
        return True
    return hint is Any
