"""The fleet notifier: queues this daemon's call events and POSTs them, in order, to the central patterd.

Fire-and-forget from the call path: `observe` only appends to a bounded queue (the oldest event is dropped and
counted when it is full). One sender task POSTs batches in queue order, so each call's events arrive in order;
a batch leaves the queue only once the central acknowledged it, and while the central is away the same batch
is retried with capped exponential backoff and jitter. Retries never duplicate: every event carries
`<call_id>:<seq>` and the receiver skips a sequence number it already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from patterd.lazy import lazy_import
from patterd.notify.signing import signed_headers
from patterd.notify.wire import NOT_SENT, encode
from patterd.protocols.events import CallEvent
from patterd.redact import RedactMode, redact_call_data, redact_url

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # only a daemon that reports to a central sends (start-up, issue 14)

log = structlog.get_logger("patterd.notify")

FLEET_PATH = "/api/v1/fleet/events"
ENV_SWITCH = "PATTER_DASHBOARD_NOTIFY"
OFF_VALUES = frozenset({"0", "false", "no", "off"})
MAX_BATCH_EVENTS = 200
MAX_BATCH_BYTES = 512 * 1024  # well under the receiver's body limit (web/limits.py INGEST_MAX_BYTES)
RETRY_BASE_SECS = 0.25
POST_TIMEOUT_SECS = 10.0
MAX_SEQ_CALLS = 20_000  # per-call sequence counters kept (events arrive after a call's end: usage, recording)
FLUSH_ON_CLOSE_SECS = 5.0


def notify_switched_off(environ: Mapping[str, str] = os.environ) -> bool:
    """`PATTER_DASHBOARD_NOTIFY=0|false|no|off` (any case, spaces ignored) turns the POST off, as the SDK reads it."""
    return environ.get(ENV_SWITCH, "").strip().lower() in OFF_VALUES


def default_source() -> str:
    """This daemon's name when `dashboard.source` is not set: the host name."""
    return socket.gethostname() or "patterd"


@dataclass
class _Queued:
    n: int  # position in the queue's lifetime: what an acknowledgement removes up to
    body: dict[str, Any]
    size: int


@dataclass
class NotifyCounters:
    """What /metrics shows of the notifier."""

    sent: int = 0  # events the central acknowledged
    failed: int = 0  # POST attempts that failed (the batch stays queued and is retried)
    dropped: int = 0  # events dropped: the queue was full, or the central refused them as malformed
    queued: int = 0  # events waiting now


class FleetNotifier:
    """Call-event observer that reports every call to a central patterd."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        source: str,
        redact: RedactMode = "full",
        max_queue: int = 10_000,
        retry_max_secs: float = 30.0,
    ) -> None:
        self.url = url + FLEET_PATH
        self._token = token  # never logged: log lines name the URL without credentials only
        self.source = source
        self.redact = redact
        self.max_queue = max_queue
        self.retry_max_secs = retry_max_secs
        self.counters = NotifyCounters()
        self._queue: deque[_Queued] = deque()
        self._n = 0
        self._seqs: OrderedDict[str, int] = OrderedDict()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ call path

    def observe(self, event: CallEvent) -> None:
        """Queue one call event; never blocks, never raises (the daemon's observers are guarded too)."""
        if type(event) in NOT_SENT:
            return
        seq = self._seqs.pop(event.call_id, 0)
        self._seqs[event.call_id] = seq + 1  # most recent last: the oldest counters go first
        if len(self._seqs) > MAX_SEQ_CALLS:
            self._seqs.popitem(last=False)
        # Numbers leave this machine as redacted as this daemon's own feed shows them.
        data = redact_call_data(event.data(), self.redact)
        body = encode(event, seq, data)
        size = len(json.dumps(body, ensure_ascii=False, default=str).encode("utf-8", "replace"))
        self._n += 1
        self._queue.append(_Queued(self._n, body, size))
        if len(self._queue) > self.max_queue:
            self._queue.popleft()
            self.counters.dropped += 1
        self.counters.queued = len(self._queue)
        self._wake.set()

    # ------------------------------------------------------------------ sender task

    def start(self, http: aiohttp.ClientSession) -> None:
        """Start sending on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(http))
        log.info("reporting calls to a central dashboard", url=redact_url(self.url), source=self.source)

    async def close(self, flush_secs: float = FLUSH_ON_CLOSE_SECS) -> None:
        """Give queued events up to `flush_secs` to reach the central, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._task), flush_secs)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        if self._queue:
            log.warning("call events not delivered to the central dashboard", events=len(self._queue))

    async def _run(self, http: aiohttp.ClientSession) -> None:
        attempt = 0
        limit = MAX_BATCH_EVENTS
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._batch(limit)
            status = await self._post(http, batch)
            if status is not None and 200 <= status < 300:
                self._acknowledged(batch[-1].n, sent=len(batch))
                attempt, limit = 0, MAX_BATCH_EVENTS
                continue
            if status in (400, 422) or (status == 413 and len(batch) == 1):
                # The central will never take these: retrying would stall every later call behind them.
                log.warning("the central dashboard refused call events", status=status, events=len(batch))
                self._acknowledged(batch[-1].n, dropped=len(batch))
                continue
            if status == 413:
                limit = max(1, len(batch) // 2)
            self.counters.failed += 1
            if attempt == 0:  # once per outage, not once per retry
                log.warning("central dashboard away; retrying", url=redact_url(self.url), status=status)
            delay = min(self.retry_max_secs, RETRY_BASE_SECS * 2**attempt)
            attempt = min(attempt + 1, 30)
            # Full jitter in [delay/2, delay]: a fleet coming back together does not retry in lockstep.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    def _batch(self, limit: int) -> list[_Queued]:
        batch: list[_Queued] = []
        size = 0
        for item in self._queue:
            if batch and (len(batch) >= limit or size + item.size > MAX_BATCH_BYTES):
                break
            batch.append(item)
            size += item.size
        return batch

    def _acknowledged(self, upto: int, *, sent: int = 0, dropped: int = 0) -> None:
        # Items dropped for room while the POST was out are already gone: remove by position, not count.
        while self._queue and self._queue[0].n <= upto:
            self._queue.popleft()
        self.counters.sent += sent
        self.counters.dropped += dropped
        self.counters.queued = len(self._queue)

    async def _post(self, http: aiohttp.ClientSession, batch: list[_Queued]) -> int | None:
        body = json.dumps(
            {"source": self.source, "events": [item.body for item in batch]},
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        ).encode("utf-8", "replace")
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers.update(signed_headers(self._token, body, time.time()))
        try:
            async with http.post(
                self.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_SECS)
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("central dashboard unreachable", url=redact_url(self.url), error=type(exc).__name__)
            return None
