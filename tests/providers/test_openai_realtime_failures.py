"""The OpenAI Realtime engine when things go wrong: drops, reconnects, silence, refused voice or key."""

from __future__ import annotations

import asyncio

import pytest

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderError
from patterd.protocols.audio import silence_ulaw
from patterd.protocols.events import CallFailed
from patterd.providers.openai_realtime import SPEC, OpenAIRealtimeOptions, check
from patterd.providers.spec import BuildContext
from tests.fakes.openai_realtime import FakeRealtimeServer, Say
from tests.providers.openai_realtime_rig import (
    TIMEOUT,
    Call,
    espoken,
    options,
    push_speech,
    running,
)


@pytest.fixture(scope="module")
def spoken_ulaw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espoken(tmp_path_factory)


# ------------------------------------------------------------------ failures


async def test_reconnects_after_a_drop_and_resends_session_update() -> None:
    async with FakeRealtimeServer(replies=[Say("Hi."), Say("Back again.")], pace=50) as fake:
        call = Call(first_message="Hi.")
        async with running(options(fake), call) as (session, task):
            await call.until(lambda: bool(call.lines("assistant")))
            await fake.drop_all()
            await fake.wait_for(lambda: fake.connections == 2 and len(fake.sessions) == 2)
            session.push_text("are you there?")
            await call.until(lambda: len(call.lines("assistant")) == 2)
            assert not task.done()
    assert session.connects == 2
    assert fake.response_requests.count(None) == 1  # the first message was not spoken twice
    # The new connection was given the conversation so far before the caller's next turn.
    assert fake.message_items[:2] == [("assistant", "Hi."), ("user", "are you there?")]
    assert not fake.errors, fake.errors  # the replayed items follow the documented schema


async def test_permanent_failure_raises_connection_error() -> None:
    async with FakeRealtimeServer(replies=[Say("Hi.")], pace=50) as fake:
        call = Call(first_message="Hi.")
        async with (
            SPEC.build(options(fake, max_retries=2), BuildContext()) as engine,
            engine.session(call) as session,
        ):
            task = asyncio.create_task(session.run())
            await call.until(lambda: bool(call.lines("assistant")))
            fake.refuse_status = 503
            await fake.drop_all()
            with pytest.raises(ProviderConnectionError, match="unreachable after 3 attempts"):
                await asyncio.wait_for(task, TIMEOUT)
    assert fake.connections == 1 and len(fake.handshakes) == 3  # the first, then max_retries retries


async def test_a_server_that_stops_answering_is_found_by_keepalive_and_reconnected() -> None:
    async with FakeRealtimeServer(replies=[Say("Hi.")], pace=50) as fake:
        call = Call(first_message="Hi.")
        async with running(options(fake, keepalive_secs=0.2), call) as (session, task):
            await call.until(lambda: bool(call.lines("assistant")))
            fake.freeze_all()  # TCP stays up; no data, no pongs
            # The new connection's session.update: the client noticed and reconnected by itself.
            await fake.wait_for(lambda: len(fake.sessions) == 2, TIMEOUT)
            assert session.connects == 2 and fake.connections == 2 and not task.done()


@pytest.mark.parametrize("turns", range(16))
async def test_a_cancel_landing_while_a_dropped_link_winds_down_ends_the_session(turns: int) -> None:
    # The call hangs up (cancels run()) `turns` loop turns after the engine link was cut: whichever
    # step of the teardown (receive loop, stopping the sender, closing, backoff) it lands in, run()
    # must end cancelled, without a reconnect that would keep a billed session open.
    async with FakeRealtimeServer(pace=50) as fake:
        call = Call(first_message=None)
        async with (
            SPEC.build(options(fake, retry_backoff_secs=0.02), BuildContext()) as engine,
            engine.session(call) as session,
        ):
            task = asyncio.create_task(session.run())
            await fake.wait_for(lambda: len(fake.sessions) == 1)
            for _ in range(5):
                session.push_audio(silence_ulaw(20))  # the sender has work in flight
            fake.drop(1)
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=TIMEOUT)
            assert done and task.cancelled(), f"run() still going {TIMEOUT} s after its cancel"
    assert fake.connections <= 2 and session.connects == fake.connections


async def test_a_refused_voice_is_dropped_and_the_session_configured_without_it(spoken_ulaw: bytes) -> None:
    replies = [Say("Hi."), Say("Sure.")]
    async with FakeRealtimeServer(replies=replies, transcripts=["Where is my order?"], pace=20) as fake:
        call = Call(first_message="Hi.")
        opts = options(fake, voice="nova")  # a TTS voice, not a Realtime one (the contract's example)
        assert "'nova' is not a Realtime voice" in opts.config_warnings()[0]
        async with SPEC.build(opts, BuildContext()) as engine:
            assert engine.warnings == opts.config_warnings()  # the daemon logs them at start and reload
        async with running(opts, call) as (session, _):
            await fake.wait_for(lambda: len(fake.sessions) == 1, TIMEOUT)
            configured = fake.sessions[0]
            assert configured["instructions"] == call.instructions
            assert "voice" not in configured["audio"]["output"]
            refused = call.of(CallFailed)
            assert len(refused) == 1 and not refused[0].fatal and "'nova'" in refused[0].message
            await call.until(lambda: len(call.lines("assistant")) == 1)  # the greeting
            await push_speech(session, spoken_ulaw)
            await call.until(lambda: len(call.lines("assistant")) == 2)  # the conversation goes on
    assert fake.connections == 1 and [e["param"] for e in fake.errors] == ["session.audio.output.voice"]


async def test_any_other_refused_session_update_fails_the_call() -> None:
    async with FakeRealtimeServer() as fake:
        call = Call()
        opts = options(fake, turn_detection={"type": "server_vad", "silence_duration_ms": "soon"})
        async with SPEC.build(opts, BuildContext()) as engine, engine.session(call) as session:
            with pytest.raises(ProviderError, match="refused the session configuration"):
                await asyncio.wait_for(session.run(), TIMEOUT)
    assert fake.connections == 1 and fake.sessions == []  # not retried: it would fail the same way


def test_voice_warnings_suggest_the_nearest_voice_and_accept_custom_ids() -> None:
    assert "did you mean 'shimmer'" in OpenAIRealtimeOptions(api_key="k", voice="shimer").config_warnings()[0]
    assert OpenAIRealtimeOptions(api_key="k", voice="marin").config_warnings() == []
    assert OpenAIRealtimeOptions(api_key="k", voice="voice_1234").config_warnings() == []


async def test_bad_key_is_an_auth_error_not_retried() -> None:
    async with FakeRealtimeServer() as fake:
        call = Call()
        async with (
            SPEC.build(options(fake, api_key="sk-wrong"), BuildContext()) as engine,
            engine.session(call) as session,
        ):
            with pytest.raises(ProviderAuthError, match="HTTP 401"):
                await asyncio.wait_for(session.run(), TIMEOUT)
    assert fake.connections == 0 and len(fake.handshakes) == 1


async def test_check_probes_the_session() -> None:
    async with FakeRealtimeServer() as fake:
        async with SPEC.build(options(fake), BuildContext()) as engine:
            await check(engine)
        async with SPEC.build(options(fake, api_key="sk-wrong"), BuildContext()) as engine:
            with pytest.raises(ProviderAuthError):
                await check(engine)
