"""Failed credentials per client address: a few are free, then the address waits longer after each one."""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

FREE_FAILURES = 5  # a person mistyping a token gets this many tries before any wait
FIRST_LOCK_SECS = 1.0  # the 5th failure locks the address for 1 s, the 6th for 2 s, the 7th for 4 s, …
MAX_LOCK_SECS = 300.0
DECAY_SECS = 60.0  # one failure is forgiven per minute without a new one (a token bucket refilling)
MAX_CLIENTS = 10_000  # addresses remembered; the oldest is forgotten first (bounded memory under a flood)
REMEMBERED_GUESSES = 16  # distinct wrong tokens remembered per address


@dataclass
class _Record:
    failures: int
    updated: float  # when `failures` was last brought up to date
    locked_until: float
    guesses: list[bytes] = field(default_factory=list)  # digests of its recent wrong tokens


class FailureThrottle:
    """Counts failed tokens per client address and says how long an address must wait before trying again.

    A locked address is refused (429) whatever it presents: answering a correct token during the lock would
    let a guesser keep guessing at full speed. Success does not reset the count — behind a tunnel every
    client shares one address, and a dashboard's good requests must not wipe out a guesser's failures.
    The same wrong token sent again (a stale cookie after the token changed, a retrying script) counts once:
    repeating a guess learns nothing, and it must not lock its owner out.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_clients: int = MAX_CLIENTS
    ) -> None:
        self._clock = clock
        self._max_clients = max_clients
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds `client` must wait before its credentials are checked again; 0 when it may try now."""
        record = self._current(client)
        if record is None:
            return 0.0
        return max(0.0, record.locked_until - self._clock())

    def failed(self, client: str, guess: str) -> None:
        """Count a wrong token from `client`; from the FREE_FAILURES-th on, lock it for a doubling time."""
        now = self._clock()
        digest = hashlib.sha256(guess.encode("utf-8", "surrogatepass")).digest()[:16]
        record = self._current(client)
        if record is None:
            record = _Record(0, now, 0.0)
            self._records[client] = record
            while len(self._records) > self._max_clients:
                self._records.popitem(last=False)
        elif digest in record.guesses:
            return
        record.guesses.append(digest)
        del record.guesses[:-REMEMBERED_GUESSES]
        record.failures += 1
        self._records.move_to_end(client)
        if record.failures >= FREE_FAILURES:
            lock = min(MAX_LOCK_SECS, FIRST_LOCK_SECS * 2 ** min(record.failures - FREE_FAILURES, 32))
            record.locked_until = max(record.locked_until, now + lock)

    @property
    def tracked(self) -> int:
        """Addresses remembered now."""
        return len(self._records)

    def _current(self, client: str) -> _Record | None:
        """The record with its failures decayed to now; None (and forgotten) once nothing is left of it."""
        record = self._records.get(client)
        if record is None:
            return None
        now = self._clock()
        forgiven = math.floor((now - record.updated) / DECAY_SECS)
        if forgiven > 0:
            record.failures = max(0, record.failures - forgiven)
            record.updated += forgiven * DECAY_SECS
        if record.failures == 0 and record.locked_until <= now:
            del self._records[client]
            return None
        return record
