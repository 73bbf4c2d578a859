"""Cases every network provider kind shares: auth errors, retryable errors, the check probe, pricing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from patterd.cost import default_prices
from patterd.errors import ProviderError
from patterd.testing.harness import Setup, assert_provider_error, control_method, skip, wait_until

__all__ = ["skip"]

Attempt = Callable[[Any], Awaitable[object]]  # one use of a built provider (a stream, a synthesis, a reply)

RETRYABLE_STATUSES = (429, 500, 503)
FATAL_STATUSES = (401, 403)


async def expect_fatal(setup: Setup[Any, Any], attempt: Attempt) -> None:
    """401 and 403 end in a ProviderAuthError that names the provider and the key's variable."""
    fail_next = control_method(setup.control, "fail_next")
    async with setup.build() as provider:
        for status in FATAL_STATUSES:
            fail_next(status)
            try:
                await attempt(provider)
            except ProviderError as exc:
                assert_provider_error(exc, setup, fatal=True, what=f"HTTP {status}")
            else:
                raise AssertionError(f"HTTP {status} from the vendor did not raise ProviderAuthError")


async def expect_retryable(setup: Setup[Any, Any], attempt: Attempt) -> None:
    """429 and 5xx are retryable (or retried by the provider itself); the same provider works afterwards."""
    fail_next = control_method(setup.control, "fail_next")
    async with setup.build() as provider:
        for status in RETRYABLE_STATUSES:
            fail_next(status)
            try:
                await attempt(provider)  # a provider that retries by itself with backoff succeeds here
            except ProviderError as exc:
                assert_provider_error(exc, setup, fatal=False, what=f"HTTP {status}")
                await attempt(provider)  # the pipeline's retry: the provider must still work


async def expect_dropped_is_retryable(setup: Setup[Any, Any], attempt: Attempt) -> None:
    """A connection cut mid-answer is a retryable ProviderError (or survived), never a hang or a crash."""
    drop_next = control_method(setup.control, "drop_next")
    async with setup.build() as provider:
        drop_next()
        try:
            await attempt(provider)
        except ProviderError as exc:
            assert_provider_error(exc, setup, fatal=False, what="dropped connection")
        await attempt(provider)


async def expect_timeout(setup: Setup[Any, Any], attempt: Attempt, timeout: float) -> None:
    """A vendor that accepts the request and then says nothing ends in a retryable error, not a hang.

    The Setup builds the provider with its own timeouts well under the suite's `timeout`.
    """
    stall_next = control_method(setup.control, "stall_next")
    async with setup.build() as provider:
        stall_next()
        try:
            async with asyncio.timeout(timeout):
                await attempt(provider)
        except ProviderError as exc:
            assert_provider_error(exc, setup, fatal=False, what="a stalled vendor")
        except TimeoutError:
            raise AssertionError(f"a stalled vendor hung the provider for over {timeout} s") from None
        else:
            raise AssertionError("a stalled vendor did not make the provider time out")


async def expect_check(setup: Setup[Any, Any]) -> None:
    """`check()` passes with the key and fails fatally (naming the key's variable) when it is refused."""
    if setup.check is None:
        skip("the provider has no check()")
    async with setup.build() as provider:
        await setup.check(provider)
        fail_next = getattr(setup.control, "fail_next", None)
        if callable(fail_next):
            fail_next(401)
            try:
                await setup.check(provider)
            except ProviderError as exc:
                assert_provider_error(exc, setup, fatal=True, what="check() with a refused key")
            else:
                raise AssertionError("check() passed although the vendor answered 401")
    if setup.build_bad_key is not None:
        async with setup.build_bad_key() as provider:
            try:
                await setup.check(provider)
            except ProviderError as exc:
                assert_provider_error(exc, setup, fatal=True, what="check() with a wrong key")
            else:
                raise AssertionError("check() passed with a wrong key")


async def expect_closed(setup: Setup[Any, Any], use: Attempt, timeout: float) -> None:
    """After real use and closing the provider, the fake holds no open connection."""
    open_connections = control_method(setup.control, "open_connections")
    async with setup.build() as provider:
        await use(provider)
    await wait_until(lambda: open_connections() == 0, timeout, "every connection to the fake to be closed")


def expect_priced(setup: Setup[Any, Any], *quantities: str) -> None:
    """Usage of this provider costs something by default: a price for one of `quantities` in patterd.cost."""
    if setup.free:
        return
    prices = default_prices(setup.provider)
    priced = [key for key in prices if any(key.startswith(q + "_per_") for q in quantities)]
    assert priced, (
        f"patterd.cost has no default {' or '.join(quantities)} price for {setup.provider!r}: "
        "its calls would cost $0"
    )
