"""Circuit breaker of one fallback chain member: repeated failures take it out of use for a while."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Literal

import structlog

from patterd.clock import SYSTEM_CLOCK, Clock

log = structlog.get_logger("patterd.fallback")  # the fallback chain's logger, as before the split


@dataclass
class Breaker:
    """Circuit breaker of one chain member: `failures` within `window_secs` open it for `open_secs`.

    Open: new calls skip the member. After `open_secs` it is half-open: the next call tries it;
    a success closes it, a failure opens it again for another `open_secs`.
    """

    clock: Clock = SYSTEM_CLOCK
    failures: int = 3
    window_secs: float = 60.0
    open_secs: float = 30.0
    _recent: collections.deque[float] = field(default_factory=collections.deque)
    _opened_at: float | None = None

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        if self.clock.monotonic() - self._opened_at < self.open_secs:
            return "open"
        return "half_open"

    def allows(self) -> bool:
        """May a new call start on this member?"""
        return self.state != "open"

    def failed(self) -> None:
        now = self.clock.monotonic()
        if self.state == "half_open":  # the trial failed: another full cool-down
            self._opened_at = now
            return
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.window_secs:
            self._recent.popleft()
        if len(self._recent) >= self.failures:
            self._opened_at = now
            self._recent.clear()
            log.warning("provider circuit opened", open_secs=self.open_secs)

    def succeeded(self) -> None:
        if self.state == "half_open":
            self._opened_at = None
            self._recent.clear()
