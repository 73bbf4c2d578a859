"""web.throttle: free failures, doubling locks, decay, repeated guesses, bounded memory (on a fake clock)."""

from __future__ import annotations

from patterd.web.throttle import DECAY_SECS, FREE_FAILURES, MAX_LOCK_SECS, FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_free_failures_then_doubling_locks() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock=clock)
    for n in range(FREE_FAILURES - 1):
        throttle.failed("10.0.0.1", f"guess-{n}")
        assert throttle.retry_after("10.0.0.1") == 0
    locks = []
    for n in range(FREE_FAILURES - 1, FREE_FAILURES + 4):
        throttle.failed("10.0.0.1", f"guess-{n}")
        wait = throttle.retry_after("10.0.0.1")
        locks.append(wait)
        clock.now += wait  # the guesser waits out each lock exactly
    assert locks == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert throttle.retry_after("10.0.0.2") == 0  # another address is not affected


def test_lock_is_capped_and_failures_decay() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock=clock)
    for n in range(40):
        throttle.failed("10.0.0.1", f"g{n}")
    assert throttle.retry_after("10.0.0.1") == MAX_LOCK_SECS
    clock.now += 40 * DECAY_SECS  # quiet long enough: every failure is forgiven, the record forgotten
    assert throttle.retry_after("10.0.0.1") == 0
    assert throttle.tracked == 0
    throttle.failed("10.0.0.1", "again")
    assert throttle.retry_after("10.0.0.1") == 0


def test_the_same_wrong_token_counts_once() -> None:
    throttle = FailureThrottle(clock=Clock())
    for _ in range(50):  # a stale cookie after the token changed, sent by every page load
        throttle.failed("10.0.0.1", "old-token")
    assert throttle.retry_after("10.0.0.1") == 0


def test_memory_is_bounded() -> None:
    throttle = FailureThrottle(clock=Clock(), max_clients=100)
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}", "x")
    assert throttle.tracked == 100
