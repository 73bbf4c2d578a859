"""The engine suite: a spoken reply with usage, barge-in stops audio, error mapping, reconnects, sockets, check."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from patterd.cost import price_usage
from patterd.errors import ProviderError
from patterd.protocols.events import BargeIn, Usage
from patterd.providers.kinds import Engine, EngineSession
from patterd.testing import common
from patterd.testing.audio import frames, silent_ulaw, voiced_ulaw
from patterd.testing.call import RecordingCall
from patterd.testing.harness import Setup, Suite, assert_provider_error, control_method, wait_until
from patterd.testing.kinds import EngineControl

QUESTION = "What are your opening hours?"
REPLY = "We are open from nine to five on weekdays."
LONG_REPLY = " ".join(["Our opening hours are nine to five on weekdays and ten to two on Saturdays."] * 8)


class Running:
    """One engine session running in the background on a RecordingCall."""

    def __init__(self, session: EngineSession, call: RecordingCall) -> None:
        self.session = session
        self.call = call
        self.task = asyncio.create_task(session.run())

    def failure(self) -> BaseException | None:
        if self.task.done() and not self.task.cancelled():
            return self.task.exception()
        return None

    async def until(self, predicate: Any, timeout: float, what: str) -> None:
        def done() -> bool:
            error = self.failure()
            if error is not None:
                raise error
            return bool(predicate())

        await wait_until(done, timeout, what)


@contextlib.asynccontextmanager
async def running(engine: Engine, call: RecordingCall) -> AsyncIterator[Running]:
    async with engine.session(call) as session:
        run = Running(session, call)
        try:
            yield run
        finally:
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ProviderError):
                await run.task


class EngineSuite(Suite[Engine, EngineControl]):
    """Behaviour every `engine.*` provider owes the call session.

    Setup features: ``barge_in_by_audio`` (the engine detects caller speech in the audio itself).
    The controller's optional ``drop_live()`` cuts the live session's connection now, and
    ``ready_sessions()`` counts sessions the engine has set up on the fake (to see a reconnect).
    """

    kind = "engine"

    async def _reply(self, setup: Setup[Engine, EngineControl], run: Running, text: str = REPLY) -> None:
        before = len(run.call.lines("assistant"))
        setup.control.queue_reply(text)
        run.session.push_text(QUESTION)
        await run.until(lambda: len(run.call.lines("assistant")) > before, self.timeout, "the agent's reply")

    async def case_spoken_reply_with_usage(self, setup: Setup[Engine, EngineControl]) -> None:
        call = RecordingCall()
        async with setup.build() as engine, running(engine, call) as run:
            await self._reply(setup, run)
            await run.until(lambda: bool(call.of(Usage)), self.timeout, "a Usage event")
        assert call.lines("assistant")[-1].text == REPLY
        assert call.ear.total_bytes > 8000, f"{call.ear.total_bytes} bytes of agent audio for {REPLY!r}"
        usage = call.of(Usage)
        assert all(u.provider == setup.provider for u in usage), [u.provider for u in usage]
        cost = sum(price_usage(u.provider, u.quantities) for u in usage)
        assert setup.free or cost > 0, f"usage {[u.quantities for u in usage]} costs $0 by default"

    async def case_barge_in_stops_audio(self, setup: Setup[Engine, EngineControl]) -> None:
        if "barge_in_by_audio" not in setup.features:
            common.skip("the engine does not detect caller speech itself")
        call = RecordingCall()
        async with setup.build() as engine, running(engine, call) as run:
            setup.control.queue_reply(LONG_REPLY)
            run.session.push_text(QUESTION)
            await run.until(lambda: call.ear.total_bytes > 0, self.timeout, "the agent to start speaking")
            for frame in frames(voiced_ulaw(800) + silent_ulaw(200)):
                run.session.push_audio(frame)
                await asyncio.sleep(0.02)  # caller speech arrives in real time
                if call.ear.interrupts:
                    break
            await run.until(
                lambda: call.ear.interrupts > 0, self.timeout, "the engine to interrupt the agent"
            )
            await run.until(lambda: bool(call.of(BargeIn)), self.timeout, "a BargeIn event")
            await run.until(lambda: bool(call.lines("assistant")), self.timeout, "the cut reply's line")
        assert call.lines("assistant")[0].interrupted, "the cut reply is not marked interrupted"
        late = sum(call.ear.bytes_after_interrupt.values())
        assert late == 0, f"{late} bytes of the interrupted reply reached the caller after the barge-in"

    async def case_auth_errors_are_fatal(self, setup: Setup[Engine, EngineControl]) -> None:
        fail_next = control_method(setup.control, "fail_next")
        for status in common.FATAL_STATUSES:
            fail_next(status)
            call = RecordingCall()
            async with setup.build() as engine, engine.session(call) as session:
                try:
                    async with asyncio.timeout(self.timeout):
                        await session.run()
                except ProviderError as exc:
                    assert_provider_error(exc, setup, fatal=True, what=f"HTTP {status} at connect")
                else:
                    raise AssertionError(f"the session ended without error after HTTP {status}")

    async def case_server_errors_are_retried(self, setup: Setup[Engine, EngineControl]) -> None:
        fail_next = control_method(setup.control, "fail_next")
        for status in common.RETRYABLE_STATUSES:
            fail_next(status)
            call = RecordingCall()
            async with setup.build() as engine, running(engine, call) as run:
                try:
                    await self._reply(setup, run)  # an engine that retries with backoff answers anyway
                except ProviderError as exc:
                    assert_provider_error(exc, setup, fatal=False, what=f"HTTP {status} at connect")

    async def case_dropped_connection_recovers(self, setup: Setup[Engine, EngineControl]) -> None:
        drop_live = control_method(setup.control, "drop_live")
        call = RecordingCall()
        async with setup.build() as engine, running(engine, call) as run:
            await self._reply(setup, run)
            ready = getattr(setup.control, "ready_sessions", None)
            before = ready() if callable(ready) else 0
            drop_live()
            if callable(ready):  # caller words said while the link is down are not the contract here
                await run.until(lambda: ready() > before, self.timeout, "the engine to reconnect")
            try:
                await self._reply(setup, run, "I am back.")
            except ProviderError as exc:
                assert_provider_error(exc, setup, fatal=False, what="dropped connection")

    async def case_sockets_closed(self, setup: Setup[Engine, EngineControl]) -> None:
        async def use(engine: Any) -> None:
            call = RecordingCall()
            async with running(engine, call) as run:
                await self._reply(setup, run)

        await common.expect_closed(setup, use, self.timeout)

    async def case_check_probe(self, setup: Setup[Engine, EngineControl]) -> None:
        await common.expect_check(setup)
