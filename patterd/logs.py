"""Logging setup: structlog to stderr, JSON lines or human, with secrets and phone numbers redacted.

Everything goes through one `logging.Handler` on the root logger whose formatter is structlog's
`ProcessorFormatter`, so records from structlog and from stdlib loggers (hypercorn, aiohttp,
asyncio) share one format, one timestamp style and one redaction pass. `call_id` and `agent`
are bound by other code with `structlog.contextvars.bind_contextvars` and appear on every line
logged in that context.

Hypercorn installs its own stderr handler unless its config is given loggers: the daemon passes
`config.errorlog = logging.getLogger("hypercorn.error")` (and `accesslog` likewise) so they
propagate here.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

from patterd.redact import SECRET_MASK, RedactMode, check_mode, redact_number, redact_numbers_in, redact_urls

LEVELS = ("debug", "info", "warning", "error", "critical")

MASK = SECRET_MASK

# Keys whose values are secrets whatever they hold (matched case-insensitively, as substrings).
_SECRET_KEY = re.compile(r"token|secret|password|passwd|api_key|apikey|authorization|credential", re.I)
# Keys that hold phone numbers; redacted only when the value looks like a number, since a key
# like `to` also names state transitions ("to": "SERVING").
_NUMBER_KEYS = frozenset({"caller", "callee", "from", "from_", "to", "phone_number", "number"})
_LOOKS_LIKE_NUMBER = re.compile(r"^\+?[\d\s().-]{4,20}$")
_SEPARATORS = re.compile(r"[\s().-]")
_AUTH_VALUE = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.I)

_handler: logging.Handler | None = None  # the handler we installed, replaced on reconfiguration


class Redactor:
    """A structlog processor masking secrets and (per mode) phone numbers in every value."""

    def __init__(self, redact_phone: RedactMode = "full") -> None:
        self.mode = check_mode(redact_phone)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return {key: self._field(key, value) for key, value in event_dict.items()}

    def _field(self, key: str, value: Any) -> Any:
        if _SECRET_KEY.search(key) and value is not None and not isinstance(value, bool | int | float):
            return MASK
        if key.lower() in _NUMBER_KEYS and isinstance(value, str) and _LOOKS_LIKE_NUMBER.match(value):
            # Formatting stripped first so "+1 555 000 1234" hashes like "+15550001234".
            return redact_number(_SEPARATORS.sub("", value), self.mode)
        return self._value(value)

    def _value(self, value: Any) -> Any:
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {str(k): self._field(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value(v) for v in value]
        return value

    def text(self, text: str) -> str:
        """Free text with auth header values, URL credentials and (per mode) E.164 numbers redacted."""
        text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {MASK}", text)
        text = redact_urls(text)
        return redact_numbers_in(text, self.mode)


def _drop_color_message(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # uvicorn-style loggers attach a second, colored copy of the message; it would double the line.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(
    level: str = "info",
    *,
    redact_phone: RedactMode = "full",
    stream: TextIO | None = None,
    json: bool | None = None,
) -> None:
    """Send every log record (structlog and stdlib) to `stream` (default stderr) in one format.

    `json=None` picks JSON lines when the stream is not a TTY and the human console renderer
    when it is. Calling again replaces the previous setup (a reload may change level or mode).
    """
    global _handler
    if level.lower() not in LEVELS:
        raise ValueError(f"logging.level is {level!r}; expected one of {', '.join(LEVELS)}")
    numeric = logging.getLevelName(level.upper())
    redactor = Redactor(redact_phone)
    out = stream if stream is not None else sys.stderr
    if json is None:
        isatty = getattr(out, "isatty", None)
        json = not (callable(isatty) and isatty())

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
        _drop_color_message,
    ]
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_wants_color(out))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction so secrets in them are masked too.
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric)
    _handler = handler

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        context_class=dict,
        # Not cached: a reload may reconfigure, and loggers made at import time must follow.
        cache_logger_on_first_use=False,
    )


def _wants_color(stream: TextIO) -> bool:
    return "NO_COLOR" not in os.environ and bool(getattr(stream, "isatty", lambda: False)())
