"""The LLM suite: streamed text in pieces, token usage, cancel mid-reply, error mapping, sockets, check."""

from __future__ import annotations

import time
from typing import Any

from patterd.providers.kinds import LLM, LLMChunk, LLMUsage, Message, TextDelta
from patterd.testing import common
from patterd.testing.harness import Setup, Suite, control_method, wait_until
from patterd.testing.kinds import LLMControl

HISTORY = (Message("system", "You are a helpful assistant."), Message("user", "What are your opening hours?"))
REPLY = "We are open from nine to five, Monday to Friday. On Saturdays we open at ten."
LONG_REPLY = " ".join(["Here is a long answer that keeps going."] * 40)


async def reply(llm: LLM, text: str = REPLY) -> list[LLMChunk]:
    return [chunk async for chunk in llm.complete(HISTORY, ())]


class LLMSuite(Suite[LLM, LLMControl]):
    """Behaviour every `llm.*` provider owes the pipeline."""

    kind = "llm"

    def _queue(self, setup: Setup[LLM, LLMControl], text: str = REPLY) -> None:
        setup.control.queue_reply(text)

    async def _one(self, setup: Setup[LLM, LLMControl], llm: LLM) -> list[LLMChunk]:
        self._queue(setup)
        return await reply(llm)

    async def case_streams_text_and_usage(self, setup: Setup[LLM, LLMControl]) -> None:
        async with setup.build() as llm:
            chunks = await self._one(setup, llm)
        pieces = [c.text for c in chunks if isinstance(c, TextDelta)]
        assert len(pieces) >= 2, f"the reply came in {len(pieces)} piece(s): it must stream"
        assert "".join(pieces).strip() == REPLY, f"reply text {''.join(pieces)!r} != {REPLY!r}"
        usage = [c for c in chunks if isinstance(c, LLMUsage)]
        assert usage, "no LLMUsage: the call's cost would miss the LLM"
        assert sum(u.input_tokens for u in usage) > 0 and sum(u.output_tokens for u in usage) > 0, usage
        assert getattr(llm, "name", None) == setup.provider, "LLM.name must be the provider name"
        common.expect_priced(setup, "input_tokens", "output_tokens")

    async def case_cancel_mid_reply(self, setup: Setup[LLM, LLMControl]) -> None:
        async with setup.build() as llm:
            self._queue(setup, LONG_REPLY)
            stream = llm.complete(HISTORY, ())
            first = await anext(aiter(stream))
            assert isinstance(first, TextDelta | LLMUsage)
            started = time.monotonic()
            await stream.aclose()  # type: ignore[attr-defined]  # barge-in: the pipeline closes the generator
            assert time.monotonic() - started < 2.0, "closing a reply mid-stream took over 2 s"
            active = getattr(setup.control, "active_streams", None)
            if callable(active):
                await wait_until(lambda: active() == 0, self.timeout, "the fake to see the reply cancelled")
            again = await self._one(setup, llm)  # the provider is still usable after a cancel
            assert any(isinstance(c, TextDelta) for c in again)

    async def case_auth_errors_are_fatal(self, setup: Setup[LLM, LLMControl]) -> None:
        await common.expect_fatal(setup, lambda llm: self._one(setup, llm))

    async def case_rate_limit_and_server_errors_are_retryable(self, setup: Setup[LLM, LLMControl]) -> None:
        await common.expect_retryable(setup, lambda llm: self._one(setup, llm))

    async def case_stalled_vendor_times_out(self, setup: Setup[LLM, LLMControl]) -> None:
        await common.expect_timeout(setup, lambda llm: self._one(setup, llm), self.timeout)

    async def case_dropped_connection_is_retryable(self, setup: Setup[LLM, LLMControl]) -> None:
        control_method(setup.control, "drop_next")
        await common.expect_dropped_is_retryable(setup, lambda llm: self._one(setup, llm))

    async def case_sockets_closed(self, setup: Setup[LLM, LLMControl]) -> None:
        async def use(llm: Any) -> None:
            await self._one(setup, llm)
            await self._one(setup, llm)

        await common.expect_closed(setup, use, self.timeout)

    async def case_check_probe(self, setup: Setup[LLM, LLMControl]) -> None:
        await common.expect_check(setup)
