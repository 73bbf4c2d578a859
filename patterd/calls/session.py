"""One call: a state machine bridging a carrier media leg and an agent engine session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from patterd.calls.call_spec import CallSpec, CallState, LiveCall, fill, prompts
from patterd.calls.playout import Playout
from patterd.calls.tools import ToolActions, ToolSet, answer_tool
from patterd.calls.turn_latency import TurnLatency
from patterd.calls.voicemail import Voicemail
from patterd.clock import Clock
from patterd.errors import PatterdError
from patterd.protocols.events import (
    AgentAudioStarted,
    CallEnded,
    CallerAudio,
    CallerDtmf,
    CallerHeard,
    CallEvent,
    CallFailed,
    CallStarted,
    CallStatusChanged,
    DtmfReceived,
    MachineDetected,
    MarkPlayed,
    RecordingReady,
    StreamStopped,
    ToolCalled,
    TranscriptLine,
    TranscriptPartial,
    TransferStarted,
)
from patterd.providers.kinds import (
    AudioOut,
    Carrier,
    CarrierLeg,
    EngineEvent,
    EngineSession,
    ToolSchema,
    UserTurnEnded,
)

if TYPE_CHECKING:
    from patterd.calls.agent import AgentRuntime
    from patterd.graph import Graph
    from patterd.http_session import HTTPSource

log = structlog.get_logger("patterd.call")

# CallSpec and CallState moved to call_spec; importers of this module still find them here.
__all__ = ["CallSession", "CallSpec", "CallState", "LiveCall", "fill"]


class CallSession:
    """Runs one call; implements the CallContext and AudioOut an engine session sees."""

    def __init__(
        self,
        spec: CallSpec,
        graph: Graph,
        agent: AgentRuntime,
        carrier: Carrier,
        *,
        emit: Callable[[CallEvent], None],
        clock: Clock,
        http: HTTPSource | None = None,
    ) -> None:
        self.spec = spec
        self.graph = graph
        self.agent = agent
        self.carrier = carrier
        self.clock = clock
        self._emit = emit
        self._http = http
        self.state = CallState.RINGING
        self.call_id = spec.call_id
        self.agent_name = agent.name
        # Engines with server-side templating (ElevenLabs dynamic_variables) read the variables as they are.
        variables, self.instructions, self.first_message = prompts(agent.config, spec)
        self.variables: Mapping[str, str] = variables
        self.toolset: ToolSet = agent.toolset
        self.tools: Sequence[ToolSchema] = self.toolset.schemas()
        self._turn = TurnLatency(clock)  # caller's last voiced frame → first agent frame on the socket
        self.playout = Playout(clock, self._turn, self._first_audio)
        self.audio: AudioOut = self.playout
        self.voicemail = Voicemail(spec.voicemail_message, self._leave_voicemail)
        self.media_connected = False
        self.status = "ringing"
        self.error: str | None = None
        self.answered_by: str | None = None
        self.started_mono = clock.monotonic()
        self.frames_in = 0
        self._leg: CarrierLeg | None = None
        self._engine: EngineSession | None = None
        self._end_requested = asyncio.Event()
        self._end_reason = ""
        self._ended = asyncio.Event()
        self._engine_ready = asyncio.Event()
        self._connected_mono: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    def started_event(self) -> CallStarted:
        """The CallStarted event announcing this call."""
        return CallStarted(
            **self.new_event_fields(),
            direction="outbound" if self.spec.direction == "outbound" else "inbound",
            agent=self.agent.name,
            agent_provider=self.agent.provider_name,
            carrier=self.spec.carrier_name,
            caller=self.spec.caller,
            callee=self.spec.callee,
            carrier_call_id=self.spec.carrier_call_id,
            trace_id=self.spec.trace_id,
        )

    async def run(self, leg: CarrierLeg) -> None:
        """Run the call over a connected media leg until it ends; never raises for call-level failures."""
        self._leg = leg
        self.playout.attach(leg)
        # A leg that can ask the caller what it heard (the browser phone): time every caller frame for it.
        self._turn.reporting = callable(getattr(leg, "announce_turn", None))
        self.media_connected = True
        self.state = CallState.CONNECTED
        self._connected_mono = self.clock.monotonic()
        self._set_status("in_progress")
        structlog.contextvars.bind_contextvars(call_id=self.call_id, agent=self.agent.name)
        log.info("call connected", carrier=self.spec.carrier_name, direction=self.spec.direction)
        # A carrier that cannot record says so (`records_calls = False`); `true` means "if it can".
        can_record = getattr(self.carrier, "records_calls", True)
        if self.agent.config.records_on_carrier and can_record and self.spec.carrier_call_id:
            self._spawn(self._start_recording())
        limit = self.agent.config.max_duration_secs
        deadline = (
            asyncio.get_running_loop().call_later(limit, self._max_duration_reached, limit)
            if limit > 0
            else None
        )
        failure: str | None = None
        component = "engine"
        try:
            async with self.agent.engine.session(self) as engine:
                self._engine = engine
                self._engine_ready.set()
                reader = asyncio.create_task(self._read_media(leg, engine), name=f"media-{self.call_id}")
                runner = asyncio.create_task(engine.run(), name=f"engine-{self.call_id}")
                ender = asyncio.create_task(self._end_requested.wait(), name=f"end-{self.call_id}")
                done, _ = await asyncio.wait({reader, runner, ender}, return_when=asyncio.FIRST_COMPLETED)
                if runner in done and not runner.cancelled() and runner.exception() is not None:
                    exc = runner.exception()
                    failure = f"{type(exc).__name__}: {exc}"
                if reader in done and not reader.cancelled() and reader.exception() is not None:
                    exc = reader.exception()
                    if failure is None:  # the carrier's stream broke (e.g. went silent): the carrier failed
                        failure, component = f"media stream failed: {type(exc).__name__}: {exc}", "carrier"
                for task in (reader, runner, ender):
                    task.cancel()
                await asyncio.gather(reader, runner, ender, return_exceptions=True)
        except PatterdError as exc:  # the engine could not even open its session
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            if deadline is not None:
                deadline.cancel()
            for task in list(self._tasks):
                task.cancel()
        self.state = CallState.ENDING
        caller_hung_up = not self._end_requested.is_set() and failure is None
        if failure:
            log.warning("call failed", error=failure)
            self.error = failure
            self.emit(CallFailed(**self.new_event_fields(), message=failure, component=component, fatal=True))
        if not caller_hung_up:
            await self.hang_up_carrier()
        with contextlib.suppress(Exception):
            await leg.close()
        status = "failed" if failure else ("voicemail" if self.status == "voicemail" else "completed")
        self.finish(status, reason=self._end_reason or ("caller hung up" if caller_hung_up else "ended"))

    def finish(self, status: str, *, reason: str = "", error: str | None = None) -> None:
        """Record the final status once (later calls are ignored)."""
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.playout.stop()
        self.voicemail.close()
        self.status = status
        if error:
            self.error = error
        duration_ms = int((self.clock.monotonic() - self.started_mono) * 1000)
        self.emit(
            CallEnded(
                **self.new_event_fields(),
                status=status,
                reason=reason,
                error=self.error,
                duration_ms=duration_ms,
            )
        )
        self._ended.set()
        log.info("call ended", call_id=self.call_id, status=status, reason=reason)

    def _max_duration_reached(self, limit: float) -> None:
        """The agent's max_duration_secs is up: end the call now, as completed (reason `max_duration`)."""
        if self.state is CallState.CONNECTED:
            log.info("call reached its maximum duration", max_duration_secs=limit)
            self.request_end("max_duration")

    def request_end(self, reason: str) -> None:
        """End the call now (API hang-up, drain, end_call after its goodbye): hang up through the carrier."""
        self._end_reason = self._end_reason or reason
        if self.state is CallState.RINGING:
            self.finish("canceled", reason=reason)
            self._spawn(self.hang_up_carrier())
            return
        self._end_requested.set()

    async def hang_up_carrier(self) -> None:
        """Tell the carrier to hang up (a failure is logged: the call is over for us either way)."""
        if not self.spec.carrier_call_id:
            return
        try:
            await self.carrier.hangup(self.spec.carrier_call_id)
        except (PatterdError, OSError) as exc:
            log.warning("carrier hangup failed", error=str(exc))

    async def _start_recording(self) -> None:
        try:
            await self.carrier.start_recording(self.spec.carrier_call_id)
        except (PatterdError, OSError) as exc:  # a recording failure never breaks the call
            log.warning("recording could not start", error=str(exc))
            self.emit(CallFailed(**self.new_event_fields(), message=str(exc), component="recording"))

    async def transfer(self, to: str) -> None:
        """Transfer the live call to `to` through the carrier."""
        self.emit(TransferStarted(**self.new_event_fields(), to=to))
        await self.carrier.transfer(self.spec.carrier_call_id, to)
        self._end_reason = f"transferred to {to}"
        self._end_requested.set()

    def push_text(self, text: str) -> None:
        """Caller text that bypasses speech recognition (simulate --text); dropped before `engine_ready`."""
        if self._engine is not None:
            self._engine.push_text(text)

    async def engine_ready(self) -> bool:
        """Wait until the engine session is open (True) or the call ended without one (False)."""
        if self._engine is None:
            ready = asyncio.ensure_future(self._engine_ready.wait())
            ended = asyncio.ensure_future(self._ended.wait())
            await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            ended.cancel()
        return self._engine is not None

    # ------------------------------------------------------------------ carrier callbacks

    def on_machine_detected(self, answered_by: str) -> None:
        """AMD answered: with a voicemail message and a machine, leave the message and hang up."""
        self.answered_by = answered_by
        self.emit(MachineDetected(**self.new_event_fields(), answered_by=answered_by))
        if self.voicemail.verdict(answered_by):
            self._set_status("voicemail")

    def _leave_voicemail(self, message: str) -> None:
        self._spawn(self._say_voicemail(message))

    async def _say_voicemail(self, message: str) -> None:
        if not await self.engine_ready():  # media not connected yet: wait for the engine (or the end)
            return
        engine = self._engine
        assert engine is not None
        await self.playout.interrupt()
        engine.say(message)
        self._spawn(self._end_after_goodbye("voicemail left"))

    def on_recording(self, url: str, duration_secs: float | None) -> None:
        """The carrier saved a recording."""
        self.emit(RecordingReady(**self.new_event_fields(), url=url, duration_secs=duration_secs))

    # ------------------------------------------------------------------ media in

    async def _read_media(self, leg: CarrierLeg, engine: EngineSession) -> None:
        push_audio = engine.push_audio
        on_mark = self.playout.on_mark
        stamp = self._turn.caller_frame if self._turn.reporting else None
        # 50 frames a second per call: exact type checks on the hot path, cheaper than isinstance/match.
        async for event in leg.events():
            kind = type(event)
            if kind is CallerAudio:
                self.frames_in += 1
                if stamp is not None:
                    stamp()
                push_audio(event.payload)  # type: ignore[union-attr]
            elif kind is MarkPlayed:
                on_mark(event.name)  # type: ignore[union-attr]
            elif kind is CallerDtmf:
                digit = event.digit  # type: ignore[union-attr]
                self.emit(DtmfReceived(**self.new_event_fields(), digit=digit))
                engine.push_dtmf(digit)
            elif kind is StreamStopped:
                return
            elif kind is CallerHeard:  # the caller's receiver report: onto its turn's line
                late = self._turn.heard(event.turn, event.heard_ms)  # type: ignore[union-attr]
                if late is not None:  # that line was recorded already: a TurnHeard the store folds onto it
                    self.emit(late.event(**self.new_event_fields()))

    def _first_audio(self, now: float) -> None:
        connected = self._connected_mono if self._connected_mono is not None else now
        self.emit(AgentAudioStarted(**self.new_event_fields(), first_audio_ms=(now - connected) * 1000))

    @property
    def frames_out(self) -> int:
        """Agent audio frames sent to the carrier so far."""
        return self.playout.frames_out

    # ------------------------------------------------------------------ CallContext

    def new_event_fields(self) -> dict[str, Any]:
        """`call_id` and `ts` for a new CallEvent."""
        return {"call_id": self.call_id, "ts": self.clock.now()}

    def mark_user_speech_end(self, at: float | None = None) -> None:
        """Kept for engines written before UserTurnEnded: `emit(UserTurnEnded(at))`."""
        self._turn.start(at)

    def emit(self, event: EngineEvent) -> None:
        """Report an event: call events go to the observers (assistant lines timed); UserTurnEnded starts the timing."""
        if isinstance(event, UserTurnEnded):
            self._turn.start(event.at)
            return
        if isinstance(event, TranscriptLine):
            event = self._turn.complete(event)
        if isinstance(event, TranscriptLine | TranscriptPartial) and self._leg is not None:
            # Legs with a screen (the browser phone) show the words too.
            show = getattr(self._leg, "send_transcript", None)
            if show is not None:
                partial = isinstance(event, TranscriptPartial)
                self._spawn(
                    show(event.role, event.text, partial=True) if partial else show(event.role, event.text)
                )
        self._emit(event)

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        """Run a tool the model called; errors become an error result for the model."""
        started = self.clock.monotonic()
        actions = ToolActions(end_call=self._tool_end_call, transfer=self.transfer)
        result, error = await answer_tool(self.toolset, name, arguments, actions, self._http)
        self.emit(
            ToolCalled(
                **self.new_event_fields(),
                name=name,
                arguments=dict(arguments),
                result=result,
                error=error,
                duration_ms=round((self.clock.monotonic() - started) * 1000, 1),
            )
        )
        return result

    async def _tool_end_call(self, reason: str) -> None:
        self._spawn(self._end_after_goodbye(reason or "agent ended the call"))

    async def _end_after_goodbye(self, reason: str) -> None:
        """Let the agent finish its goodbye (audio may still be arriving), then end the call."""
        await self.playout.goodbye_heard()
        self._end_reason = self._end_reason or reason
        self._end_requested.set()

    # ------------------------------------------------------------------ helpers

    def _set_status(self, status: str) -> None:
        if status == self.status:
            return
        if self.status == "voicemail" and status == "in_progress":
            return
        self.status = status
        self.emit(CallStatusChanged(**self.new_event_fields(), status=status))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def snapshot(self) -> LiveCall:
        """A small read-only view of the call for the web layer."""
        return LiveCall(
            call_id=self.call_id,
            agent=self.agent.name,
            state=self.state,
            status=self.status,
            direction=self.spec.direction,
            carrier=self.spec.carrier_name,
        )
