"""The frame every behavioural suite shares: a Setup per case, the fake's controller, skips and waits."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar

from patterd.errors import ProviderAuthError, ProviderError

P = TypeVar("P")
C = TypeVar("C")


class CaseSkipped(Exception):
    """A case needs something the provider or its fake controller does not offer (outside pytest)."""


def skip(reason: str) -> NoReturn:
    """Skip the running case: pytest's skip when pytest runs it, else CaseSkipped."""
    outcomes = sys.modules.get("_pytest.outcomes")
    if outcomes is not None:
        outcomes.skip(reason)
    raise CaseSkipped(reason)


class FakeControl(Protocol):
    """What every fake controller offers; a method it lacks skips the cases needing it.

    - ``fail_next(status)``: answer the next request or websocket handshake with this HTTP status
      and the vendor's error body (401, 403, 429, 500, 503, ...);
    - ``drop_next()``: cut the connection of the next request or stream after it has started
      answering, without a close frame (a crashed upstream);
    - ``stall_next()``: accept the next request, then send nothing (a hung upstream); the provider
      must time out (build it with short timeouts) with a retryable error;
    - ``open_connections()``: client TCP connections the fake holds open right now, idle
      keep-alive ones included (every one must be gone once the provider is closed);
    - ``active_streams()``: responses or sockets the fake is still serving (0 once a cancelled
      stream has been torn down).
    """

    def open_connections(self) -> int:
        """Client TCP connections open on the fake now."""
        ...


@dataclass
class Setup(Generic[P, C]):
    """One case's world: how to build the provider against the fake, and the fake's controller."""

    provider: str  # ProviderError.provider and the cost-table name, e.g. "deepgram"
    key_variable: str | None  # the key's environment variable auth errors must name (None: keyless)
    build: Callable[[], AbstractAsyncContextManager[P]]  # the provider pointed at the fake, good key
    control: C
    check: Callable[[Any], Awaitable[None]] | None = None  # the spec's `check` (`patterd check --probe`)
    build_bad_key: Callable[[], AbstractAsyncContextManager[P]] | None = None  # same with a refused key
    features: frozenset[str] = field(default_factory=frozenset)  # kind-specific, see each suite
    free: bool = False  # costs nothing (offline): no price needed in patterd.cost
    secrets: tuple[str, ...] = ()  # key values no error message may show


SetupFactory = Callable[[], AbstractAsyncContextManager[Setup[Any, Any]]]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` on the event loop until it holds (fakes change state on their own sockets)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def control_method(control: object, name: str) -> Callable[..., Any]:
    """The controller's `name` method, or skip the case saying the fake cannot do it."""
    method: Callable[..., Any] | None = getattr(control, name, None)
    if not callable(method):
        skip(f"the fake controller has no {name}()")
    return method


def assert_provider_error(exc: BaseException, setup: Setup[Any, Any], *, fatal: bool, what: str) -> None:
    """`exc` is the ProviderError the contract asks for: fatal auth naming the key, or retryable."""
    assert isinstance(exc, ProviderError), (
        f"{what}: expected a ProviderError, got {type(exc).__name__}: {exc}"
    )
    assert exc.provider == setup.provider, (
        f"{what}: ProviderError.provider is {exc.provider!r}, not {setup.provider!r}"
    )
    if fatal:
        assert isinstance(exc, ProviderAuthError), (
            f"{what}: expected ProviderAuthError, got {type(exc).__name__}"
        )
        assert not exc.retryable, f"{what}: an auth error must not be retryable"
        if setup.key_variable:
            assert setup.key_variable in str(exc), (
                f"{what}: the message must name {setup.key_variable}: {exc}"
            )
    else:
        assert exc.retryable, f"{what}: expected a retryable error, got {type(exc).__name__}: {exc}"


class Suite(Generic[P, C]):
    """Base of the suites: `cases()` lists the case names, `run(case)` runs one on a fresh Setup."""

    kind: ClassVar[str] = ""
    timeout: float

    def __init__(self, setup: SetupFactory, *, timeout: float = 10.0) -> None:
        self._setup = setup
        self.timeout = timeout

    @classmethod
    def cases(cls) -> tuple[str, ...]:
        """Every case name, in definition order (for `pytest.mark.parametrize`)."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                case = name.removeprefix("case_")
                if name.startswith("case_") and inspect.iscoroutinefunction(value) and case not in names:
                    names.append(case)
        return tuple(names)

    async def run(self, case: str) -> None:
        """Run one case against a fresh fake; raises AssertionError when the provider breaks the contract."""
        method = getattr(self, f"case_{case}", None)
        if method is None:
            raise ValueError(f"{type(self).__name__} has no case {case!r}; cases: {', '.join(self.cases())}")
        async with self._setup() as setup:
            async with asyncio.timeout(self.timeout * 3):
                await method(setup)

    async def run_all(self) -> dict[str, str]:
        """Run every case (outside pytest): case → "passed" or "skipped: why"; the first failure raises."""
        results: dict[str, str] = {}
        for case in self.cases():
            try:
                await self.run(case)
            except CaseSkipped as exc:
                results[case] = f"skipped: {exc}"
            else:
                results[case] = "passed"
        return results
