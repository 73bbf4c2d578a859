"""In-memory fakes for unit tests of the call session's seams: clock, media leg, carrier, engine, event log.

Pure in-memory (no sockets): these test the session's internal seams; the protocol boundaries
(carrier websockets, engine vendors) are tested over real loopback sockets elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from patterd.calls.agent import AgentRuntime
from patterd.calls.session import CallSession, CallSpec
from patterd.calls.tools import ToolSet
from patterd.config.model import AgentConfig
from patterd.graph import AgentParts, Graph
from patterd.protocols.events import CallEvent, MarkPlayed, MediaEvent, StreamStopped
from patterd.providers.kinds import CallContext, Carrier, DialRequest

TIMEOUT = 5.0


class FakeClock:
    """A clock that moves only when the test moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def monotonic(self) -> float:
        return self.t

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def advance(self, secs: float) -> None:
        self.t += secs


class FakeLeg:
    """A carrier media leg: the test feeds media events; what the session sends is recorded."""

    def __init__(self, *, echo_marks: bool = True) -> None:
        self.inbox: asyncio.Queue[MediaEvent | BaseException] = asyncio.Queue()
        self.echo_marks = echo_marks  # play every mark at once (a caller with a fast ear)
        self.audio: list[bytes] = []
        self.marks: list[str] = []
        self.clears = 0
        self.closed = False

    def feed(self, event: MediaEvent) -> None:
        self.inbox.put_nowait(event)

    def break_stream(self, exc: BaseException) -> None:
        """The carrier's stream fails with `exc` (after the events fed so far)."""
        self.inbox.put_nowait(exc)

    def hang_up(self) -> None:
        self.inbox.put_nowait(StreamStopped("caller hung up"))

    async def events(self) -> AsyncIterator[MediaEvent]:
        while True:
            event = await self.inbox.get()
            if isinstance(event, BaseException):
                raise event
            yield event
            if isinstance(event, StreamStopped):
                return

    async def send_audio(self, ulaw: bytes) -> None:
        self.audio.append(ulaw)

    async def send_mark(self, name: str) -> None:
        self.marks.append(name)
        if self.echo_marks:
            self.inbox.put_nowait(MarkPlayed(name))

    async def clear(self) -> None:
        self.clears += 1

    async def close(self) -> None:
        self.closed = True


class FakeCarrier:
    """The carrier's REST side: records hang-ups, transfers and recordings."""

    name = "fake"

    def __init__(self) -> None:
        self.hangups: list[str] = []
        self.transfers: list[tuple[str, str]] = []
        self.recordings: list[str] = []
        self.fail_recording: Exception | None = None

    async def handle_webhook(self, request: Any, hook: str, router: Any) -> Any:
        raise NotImplementedError("no webhooks in memory")

    async def handle_media(self, websocket: Any, call_id: str, router: Any) -> None:
        raise NotImplementedError("no media sockets in memory")

    async def dial(self, request: DialRequest) -> str:
        return f"fake-{request.call_id}"

    async def hangup(self, carrier_call_id: str) -> None:
        self.hangups.append(carrier_call_id)

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        self.transfers.append((carrier_call_id, to))

    async def start_recording(self, carrier_call_id: str) -> None:
        if self.fail_recording is not None:
            raise self.fail_recording
        self.recordings.append(carrier_call_id)


class FakeEngineSession:
    """An EngineSession that records what the session pushes; `run` lasts until cancelled or failed."""

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.audio: list[bytes] = []
        self.dtmf: list[str] = []
        self.texts: list[str] = []
        self.said: list[str] = []
        self.failure: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self.on_say: Callable[[str], None] | None = None

    def fail(self, exc: BaseException) -> None:
        """`run` raises `exc` (the engine is gone for good)."""
        self.failure.set_result(exc)

    async def run(self) -> None:
        raise await self.failure

    def push_audio(self, ulaw: bytes) -> None:
        self.audio.append(ulaw)

    def push_dtmf(self, digit: str) -> None:
        self.dtmf.append(digit)

    def push_text(self, text: str) -> None:
        self.texts.append(text)

    def say(self, text: str) -> None:
        self.said.append(text)
        if self.on_say is not None:
            self.on_say(text)


class FakeEngine:
    """An Engine whose sessions are FakeEngineSessions; `open_error` makes opening a session fail."""

    def __init__(self) -> None:
        self.sessions: list[FakeEngineSession] = []
        self.opened = asyncio.Event()
        self.open_error: Exception | None = None

    @contextlib.asynccontextmanager
    async def session(self, call: CallContext) -> AsyncIterator[FakeEngineSession]:
        if self.open_error is not None:
            raise self.open_error
        session = FakeEngineSession(call)
        self.sessions.append(session)
        self.opened.set()
        yield session

    async def wait_session(self) -> FakeEngineSession:
        async with asyncio.timeout(TIMEOUT):
            await self.opened.wait()
        return self.sessions[-1]


@dataclass
class EventLog:
    """The call events a session emitted, with a way to wait for one."""

    events: list[CallEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, event: CallEvent) -> None:
        self.events.append(event)
        self.changed.set()

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type[Any]) -> Any:
        async with asyncio.timeout(TIMEOUT):
            while not (found := self.of(kind)):
                self.changed.clear()
                await self.changed.wait()
        return found[0]


@dataclass
class Rig:
    """A CallSession wired to fakes."""

    session: CallSession
    clock: FakeClock
    leg: FakeLeg
    carrier: FakeCarrier
    engine: FakeEngine
    log: EventLog
    task: asyncio.Task[None] | None = None

    def connect(self) -> None:
        """The media stream connects: the session starts running the call."""
        self.task = asyncio.create_task(self.session.run(cast(Any, self.leg)))

    async def ended(self) -> None:
        assert self.task is not None
        async with asyncio.timeout(TIMEOUT):
            await self.task


def rig(
    *,
    agent: Mapping[str, Any] | None = None,
    voicemail_message: str | None = None,
    carrier_call_id: str = "CA1",
    direction: str = "inbound",
    toolset: ToolSet | None = None,
    echo_marks: bool = True,
) -> Rig:
    """A session for agent config `agent` (just a name by default) on fakes; call `connect()` to run it."""
    clock = FakeClock()
    config = AgentConfig.model_validate({"name": "desk", **(agent or {})}, context={"pipeline_checked": True})
    engine = FakeEngine()
    runtime = AgentRuntime(AgentParts(config), cast(Any, engine), toolset or ToolSet())
    carrier = FakeCarrier()
    log = EventLog()
    spec = CallSpec(
        "call-1",
        direction,
        "fake",
        carrier_call_id,
        "+15550001111",
        "+15550002222",
        voicemail_message=voicemail_message,
    )
    session = CallSession(spec, cast(Graph, None), runtime, cast(Carrier, carrier), emit=log, clock=clock)
    return Rig(session, clock, FakeLeg(echo_marks=echo_marks), carrier, engine, log)
