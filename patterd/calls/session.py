"""One call: a state machine bridging a carrier media leg and an agent engine session."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from patterd.calls.tools import ToolActions, ToolFailure, ToolSet, run_tool
from patterd.calls.turn_latency import TurnLatency
from patterd.clock import Clock
from patterd.errors import PatterdError
from patterd.protocols.audio import FRAME_BYTES
from patterd.protocols.events import (
    AgentAudioStarted,
    CallEnded,
    CallerAudio,
    CallerDtmf,
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
from patterd.providers.kinds import AudioOut, Carrier, CarrierLeg, EngineSession, ToolSchema

if TYPE_CHECKING:
    import aiohttp

    from patterd.calls.agent import AgentRuntime
    from patterd.graph import Graph

log = structlog.get_logger("patterd.call")

MARK_EVERY_MS = 200.0  # one mark per ~200 ms of audio: enough precision for truncation, cheap on the wire
DRAIN_SLACK_SECS = 2.0  # how long past the estimated end of playout we wait for the carrier's last mark
GOODBYE_QUIET_SECS = 0.4  # after end_call, wait this long with no new agent audio before hanging up
MACHINE_START_GRACE_SECS = 3.0  # after AMD's machine_start, wait this long for the end of the greeting
GOODBYE_WAIT_SECS = 3.0  # how long a goodbye (or voicemail message) still to come may take to start playing


class CallState(enum.Enum):
    """Where a call is in its life."""

    RINGING = "ringing"  # admitted or dialled; waiting for the media stream
    CONNECTED = "connected"  # media flowing, engine running
    ENDING = "ending"  # hang-up decided; finishing playout, closing the engine
    ENDED = "ended"  # final status recorded; nothing more happens


AMD_MACHINE = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)


@dataclass
class CallSpec:
    """What is known about a call when it is admitted or placed."""

    call_id: str
    direction: str  # inbound | outbound
    carrier_name: str
    carrier_call_id: str
    caller: str
    callee: str
    variables: Mapping[str, str] = field(default_factory=dict)
    voicemail_message: str | None = None
    trace_id: str = ""


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
        http: aiohttp.ClientSession | None = None,
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
        variables = {**agent.config.variables, **spec.variables}
        # Engines with server-side templating (ElevenLabs dynamic_variables) read them as they are.
        self.variables: Mapping[str, str] = variables
        self.instructions = fill(agent.config.system_prompt, variables)
        self.first_message = (
            fill(agent.config.first_message, variables) if agent.config.first_message else None
        )
        self.toolset: ToolSet = agent.toolset
        self.tools: Sequence[ToolSchema] = self.toolset.schemas()
        self.audio: AudioOut = self  # the session is its own AudioOut
        self.media_connected = False
        self.status = "ringing"
        self.error: str | None = None
        self.answered_by: str | None = None
        self.started_mono = clock.monotonic()
        self.frames_in = 0
        self.frames_out = 0
        self._leg: CarrierLeg | None = None
        self._engine: EngineSession | None = None
        self._end_requested = asyncio.Event()
        self._end_reason = ""
        self._ended = asyncio.Event()
        self._engine_ready = asyncio.Event()
        self._connected_mono: float | None = None
        self._first_audio_sent = False
        # playout accounting: when the queued agent audio will have finished playing
        self._play_end = 0.0
        self._segment = ""
        self._segment_start = 0.0
        self._segment_ms = 0.0
        self._unmarked_ms = 0.0
        self._marks: dict[str, float] = {}
        self._mark_seq = itertools.count(1)
        self._marks_done = asyncio.Event()
        self._marks_done.set()
        self._last_play_mono = 0.0
        self._audio_played = asyncio.Event()  # set by every play(); lets a goodbye wait for its first audio
        self._turn = TurnLatency(clock)  # caller's last voiced frame → first agent frame on the socket
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ending_soon = False
        self._voicemail_left = False
        self._voicemail_grace: asyncio.TimerHandle | None = None

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
        self.media_connected = True
        self.state = CallState.CONNECTED
        self._connected_mono = self.clock.monotonic()
        self._set_status("in_progress")
        structlog.contextvars.bind_contextvars(call_id=self.call_id, agent=self.agent.name)
        log.info("call connected", carrier=self.spec.carrier_name, direction=self.spec.direction)
        if self.agent.config.recording and self.spec.carrier_call_id:
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
        self._ending_soon = True
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
        if answered_by in AMD_MACHINE and self.spec.voicemail_message:
            self._set_status("voicemail")
            if self._voicemail_left:
                return
            if answered_by == "machine_start":
                # The greeting is still playing; carriers that report its end (Telnyx greeting_end,
                # Twilio DetectMessageEnd) send another result soon: speak after the beep, not over it.
                self._voicemail_grace = asyncio.get_running_loop().call_later(
                    MACHINE_START_GRACE_SECS, self._start_voicemail
                )
                return
            self._start_voicemail()

    def _start_voicemail(self) -> None:
        """Leave the voicemail message, once per call."""
        if self._voicemail_grace is not None:
            self._voicemail_grace.cancel()
        if self._voicemail_left or not self.spec.voicemail_message or self.state is CallState.ENDED:
            return
        self._voicemail_left = True
        self._spawn(self._leave_voicemail(self.spec.voicemail_message))

    async def _leave_voicemail(self, message: str) -> None:
        if self._engine is None:  # media not connected yet: wait for the engine (or the end of the call)
            ready = asyncio.ensure_future(self._engine_ready.wait())
            ended = asyncio.ensure_future(self._ended.wait())
            await asyncio.wait({ready, ended}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            ended.cancel()
        engine = self._engine
        if engine is None:
            return
        await self.interrupt()
        engine.say(message)
        self._spawn(self._end_after_goodbye("voicemail left"))

    def on_recording(self, url: str, duration_secs: float | None) -> None:
        """The carrier saved a recording."""
        self.emit(RecordingReady(**self.new_event_fields(), url=url, duration_secs=duration_secs))

    # ------------------------------------------------------------------ media in

    async def _read_media(self, leg: CarrierLeg, engine: EngineSession) -> None:
        push_audio = engine.push_audio
        # 50 frames a second per call: exact type checks on the hot path, cheaper than isinstance/match.
        async for event in leg.events():
            kind = type(event)
            if kind is CallerAudio:
                self.frames_in += 1
                push_audio(event.payload)  # type: ignore[union-attr]
            elif kind is MarkPlayed:
                self._on_mark(event.name)  # type: ignore[union-attr]
            elif kind is CallerDtmf:
                digit = event.digit  # type: ignore[union-attr]
                self.emit(DtmfReceived(**self.new_event_fields(), digit=digit))
                engine.push_dtmf(digit)
            elif kind is StreamStopped:
                return

    # ------------------------------------------------------------------ AudioOut

    async def play(self, ulaw: bytes, segment: str = "") -> None:
        """Send agent audio to the carrier and account for when it will have played."""
        leg = self._leg
        if leg is None or self.state is CallState.ENDED:
            return
        now = self.clock.monotonic()
        ms = len(ulaw) / 8.0
        start = max(now, self._play_end)
        if segment != self._segment or self._segment_ms == 0:
            self._segment = segment
            self._segment_start = start
            self._segment_ms = 0.0
        elif (
            now > self._play_end
        ):  # a pause inside the segment: shift its start so elapsed time = heard audio
            self._segment_start += now - self._play_end
        self._segment_ms += ms
        self._play_end = start + ms / 1000.0
        self._last_play_mono = now
        self._audio_played.set()
        if not self._first_audio_sent:
            self._first_audio_sent = True
            connected = self._connected_mono if self._connected_mono is not None else now
            self.emit(AgentAudioStarted(**self.new_event_fields(), first_audio_ms=(now - connected) * 1000))
        self.frames_out += (len(ulaw) + FRAME_BYTES - 1) // FRAME_BYTES
        # Stopped as the frame goes to the socket's writer (the write itself does not wait): stamping after
        # the await would add however long this task then waits for the loop, which the caller never hears.
        self._turn.sent()
        await leg.send_audio(ulaw)
        self._unmarked_ms += ms
        if self._unmarked_ms >= MARK_EVERY_MS:
            await self._send_mark()

    async def _send_mark(self) -> None:
        leg = self._leg
        if leg is None:
            return
        name = f"m{next(self._mark_seq)}"
        self._marks[name] = self._play_end
        self._marks_done.clear()
        self._unmarked_ms = 0.0
        await leg.send_mark(name)

    def _on_mark(self, name: str) -> None:
        if self._marks.pop(name, None) is not None and not self._marks:
            self._marks_done.set()

    async def interrupt(self) -> tuple[str, int] | None:
        """Barge-in: clear the carrier's buffer; returns (segment, ms of it the caller heard)."""
        if not self.speaking or self._leg is None:
            return None
        now = self.clock.monotonic()
        played = max(0.0, min(self._segment_ms, (now - self._segment_start) * 1000.0))
        await self._leg.clear()
        segment = self._segment
        self._play_end = now
        self._segment_ms = 0.0
        self._unmarked_ms = 0.0
        self._marks.clear()  # the carrier echoes (or drops) them on clear; they no longer mean anything
        self._marks_done.set()
        return segment, int(played)

    async def drained(self) -> None:
        """Wait until everything queued has been played (the carrier's marks say so)."""
        if self._leg is None:
            return
        if self._unmarked_ms > 0:
            await self._send_mark()
        budget = max(0.0, self._play_end - self.clock.monotonic()) + DRAIN_SLACK_SECS
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget):
                await self._marks_done.wait()

    @property
    def speaking(self) -> bool:
        """True while agent audio is queued or playing."""
        return bool(self._marks) or self.clock.monotonic() < self._play_end

    # ------------------------------------------------------------------ CallContext

    def new_event_fields(self) -> dict[str, Any]:
        """`call_id` and `ts` for a new CallEvent."""
        return {"call_id": self.call_id, "ts": self.clock.now()}

    def mark_user_speech_end(self, at: float | None = None) -> None:
        """The caller's turn ended, its last voiced frame having arrived at monotonic `at` (None: now)."""
        self._turn.start(at)

    def emit(self, event: CallEvent) -> None:
        """Pass an event to the observers; assistant lines get the measured turn latency."""
        if isinstance(event, TranscriptLine):
            event = self._turn.complete(event)
        if isinstance(event, TranscriptLine | TranscriptPartial) and self._leg is not None:
            show = getattr(self._leg, "send_transcript", None)  # legs with a screen (the softphone) show it
            if show is not None:
                partial = isinstance(event, TranscriptPartial)
                self._spawn(
                    show(event.role, event.text, partial=True) if partial else show(event.role, event.text)
                )
        self._emit(event)

    async def run_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        """Run a tool the model called; errors become an error result for the model."""
        started = self.clock.monotonic()
        error: str | None = None
        try:
            result = await run_tool(
                self.toolset,
                name,
                arguments,
                ToolActions(end_call=self._tool_end_call, transfer=self.transfer),
                self._http,
            )
        except ToolFailure as exc:
            error = str(exc)
        except PatterdError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is not None:
            result = json.dumps({"error": error})
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
        self._ending_soon = True
        if not self.speaking:
            # The goodbye is still to come (the model answers the tool output, or the voicemail
            # message was just requested): a first audio frame takes longer than the quiet gap.
            self._audio_played.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GOODBYE_WAIT_SECS):
                    await self._audio_played.wait()
        while True:
            await self.drained()
            quiet_since = self._last_play_mono
            await asyncio.sleep(GOODBYE_QUIET_SECS)
            if self._last_play_mono == quiet_since and not self.speaking:
                break
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

    def snapshot(self) -> dict[str, Any]:
        """A small live view of the call for the API."""
        return {
            "call_id": self.call_id,
            "agent": self.agent.name,
            "state": self.state.value,
            "status": self.status,
            "direction": self.spec.direction,
            "carrier": self.spec.carrier_name,
        }


def fill(template: str, variables: Mapping[str, str]) -> str:
    """Replace `{name}` placeholders with variables; unknown placeholders stay as written."""

    class _Keep(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return template.format_map(_Keep(variables))
    except (ValueError, IndexError):  # stray braces in a prompt: leave the text alone
        return template
