"""Routes calls to agents, tracks live calls, places outbound calls, and refuses new ones while draining."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from patterd.calls.agent import agent_runtime
from patterd.calls.media_admission import MediaAdmission
from patterd.calls.recording import finish_recording, record_leg
from patterd.calls.recording_timeline import RecordingSink
from patterd.calls.session import CallSession, CallSpec, CallState
from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.cluster.media_gate import TOKEN_PARAMETER, MediaGate
from patterd.errors import CallError, PatterdError
from patterd.protocols.events import FINAL_STATUSES, CallEvent
from patterd.protocols.jsontext import clean_text
from patterd.providers.kinds import Admission, Carrier, CarrierLeg, DialRequest, InboundCall

if TYPE_CHECKING:
    from patterd.graph import Graph
    from patterd.http_session import HTTPSource

log = structlog.get_logger("patterd.switchboard")

# A call that never connects its media must not ring forever: an inbound call's stream follows the
# webhook within a second or two; an outbound call rings until answered (carriers give up near 60 s).
MEDIA_TIMEOUT_SECS = {"inbound": 30.0, "outbound": 120.0}


def new_call_id() -> str:
    """A fresh call id: unguessable, URL-safe, sortable enough to read in logs."""
    return "call_" + uuid.uuid4().hex


class Switchboard(MediaAdmission):
    """The CallRouter carriers call into, and the place the ops API steers calls from."""

    def __init__(
        self,
        graph: Graph,
        *,
        emit: Callable[[CallEvent], None],
        clock: Clock = SYSTEM_CLOCK,
        http: HTTPSource | None = None,
        recorded: Callable[[str], Awaitable[object]] | None = None,
        gate: MediaGate | None = None,
    ) -> None:
        self.graph = graph
        self.gate = gate or MediaGate.from_secret(None)  # call tokens: any replica may take the media
        self._emit = emit
        self._recorded = (
            recorded  # the store's wait for a call's first durable record (carriers answer after it)
        )
        self.clock = clock
        self.http = http
        # Opens a call's recording.wav beside its record (`recording: local`); set by the daemon from its store.
        self.open_recording: Callable[[str], RecordingSink | None] | None = None
        self.calls: dict[str, CallSession] = {}
        self._by_carrier: dict[tuple[str, str], str] = {}
        self.draining = False
        self.media_timeouts = dict(MEDIA_TIMEOUT_SECS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rejections: dict[tuple[str, str], int] = {}
        self.bad_frames: dict[tuple[str, str], int] = {}  # (carrier, reason) → media frames dropped
        self.refused: dict[tuple[str, str], int] = {}  # (carrier, reason) → new calls refused
        self.frames_in_done = 0  # media frames of calls that have ended (live ones are summed on demand)
        self.frames_out_done = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ graph swaps

    async def swap_graph(self, graph: Graph) -> Graph:
        """New calls use `graph` from now on; the old one closes when its last call ends."""
        old, self.graph = self.graph, graph
        await old.retire()
        return old

    # ------------------------------------------------------------------ CallRouter

    def admit(self, call: InboundCall) -> Admission | None:
        """Accept a call from a carrier, or refuse it (draining, or an outbound id we do not know)."""
        if call.call_id is not None:  # a call we placed: the carrier carries our id back
            session = self.calls.get(call.call_id)
            if session is None or session.state is not CallState.RINGING:
                return None
            if call.carrier_call_id and not session.spec.carrier_call_id:
                session.spec.carrier_call_id = call.carrier_call_id
                self._by_carrier[(call.carrier, call.carrier_call_id)] = session.call_id
            return self._admission(session)
        if self.draining:
            log.info("call refused: draining", carrier=call.carrier)
            self._count_refusal(call.carrier, "draining")
            return None
        existing = self._by_carrier.get((call.carrier, call.carrier_call_id))
        if existing is not None and existing in self.calls:  # a retried webhook: same answer as before
            return self._admission(self.calls[existing])
        if self.at_capacity:
            log.warning("call refused: at server.max_calls", carrier=call.carrier, live_calls=len(self.calls))
            self._count_refusal(call.carrier, "max_calls")
            return None
        session = self.open_call(
            CallSpec(
                call_id=new_call_id(),
                direction=call.direction,
                carrier_name=call.carrier,
                carrier_call_id=call.carrier_call_id,
                caller=call.caller,
                callee=call.callee,
                trace_id=uuid.uuid4().hex,
            ),
            agent_name=None,
        )
        return self._admission(session)

    def _admission(self, session: CallSession) -> Admission:
        """An admitted call's answer; the carrier awaits `recorded` before telling the caller's network."""
        wait = self._recorded
        call_id = session.call_id
        return Admission(
            call_id,
            session.agent.name,
            {"call_id": call_id, TOKEN_PARAMETER: self.gate.token_for(session.spec, session.agent.name)},
            recorded=(lambda: wait(call_id)) if wait is not None else None,
        )

    async def run_media(self, call_id: str, leg: CarrierLeg) -> None:
        """Run the call on its media leg until it ends."""
        session = self.calls.get(call_id)
        if session is None or session.media_connected:
            raise CallError(f"no call {call_id!r} is waiting for media")
        if session.agent.config.records_locally:  # recording.wav beside the record, at the leg boundary
            sink = self.open_recording(call_id) if self.open_recording is not None else None
            leg = record_leg(leg, sink, self.clock)
        try:
            await session.run(leg)
        finally:
            finish_recording(leg)
            await self._close(session)

    def call_id_for(self, carrier: str, carrier_call_id: str) -> str | None:
        """Our id for a carrier's call id."""
        return self._by_carrier.get((carrier, carrier_call_id))

    def carrier_status(self, call_id: str, status: str, detail: Mapping[str, Any] | None = None) -> None:
        """A carrier status callback: a final status before media connected ends the call with it."""
        session = self.calls.get(call_id)
        if session is None:
            return
        log.info("carrier status", call_id=call_id, status=status)
        if status in FINAL_STATUSES and not session.media_connected:
            session.finish(status, reason=f"carrier reported {status}")
            self._spawn(self._close(session))

    def machine_detected(self, call_id: str, answered_by: str) -> None:
        """AMD result for a call."""
        session = self.calls.get(call_id)
        if session is not None:
            session.on_machine_detected(answered_by)

    def recording_ready(self, call_id: str, url: str, duration_secs: float | None = None) -> None:
        """A recording of a call was saved."""
        session = self.calls.get(call_id)
        if session is not None:
            session.on_recording(url, duration_secs)

    def count_rejection(self, carrier: str, reason: str) -> None:
        """Count a refused webhook or websocket."""
        key = (carrier, reason)
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def count_bad_frame(self, carrier: str, reason: str) -> None:
        """Count a media frame that was dropped (protocols.frames.REASONS says why)."""
        key = (carrier, reason)
        self.bad_frames[key] = self.bad_frames.get(key, 0) + 1

    @property
    def at_capacity(self) -> bool:
        """True when `server.max_calls` calls (ringing or connected) are live; 0 means no limit."""
        limit = self.graph.config.server.max_calls
        return limit > 0 and len(self.calls) >= limit

    def _count_refusal(self, carrier: str, reason: str) -> None:
        key = (carrier, reason)
        self.refused[key] = self.refused.get(key, 0) + 1

    # ------------------------------------------------------------------ operations

    async def place_call(
        self,
        to: str,
        *,
        agent: str | None = None,
        from_: str | None = None,
        variables: Mapping[str, str] | None = None,
        machine_detection: bool = False,
        voicemail_message: str | None = None,
    ) -> str:
        """Dial `to` through the configured carrier; returns our call id (the call rings meanwhile)."""
        if self.draining:
            raise CallError("the daemon is draining; no new calls")
        graph = self.graph
        if self.at_capacity:
            self._count_refusal(graph.config.carrier.type, "max_calls")
            raise CallError(
                f"{len(self.calls)} calls are live, the limit (server.max_calls); try again later"
            )
        if agent is not None and agent not in graph.agents:
            raise CallError(f"unknown agent {agent!r}; known: {', '.join(graph.agents)}")
        caller = from_ or graph.config.phone_number or ""
        session = self.open_call(
            CallSpec(
                call_id=new_call_id(),
                direction="outbound",
                carrier_name=graph.config.carrier.type,
                carrier_call_id="",
                caller=caller,
                callee=to,
                variables=dict(variables or {}),
                voicemail_message=voicemail_message,
                trace_id=uuid.uuid4().hex,
            ),
            agent_name=agent,
        )
        try:
            carrier_call_id = await graph.carrier.dial(
                DialRequest(
                    call_id=session.call_id,
                    to=to,
                    from_=caller,
                    machine_detection=machine_detection or voicemail_message is not None,
                )
            )
        except PatterdError as exc:
            session.finish("failed", reason="dial failed", error=f"{type(exc).__name__}: {exc}")
            await self._close(session)
            raise
        session.spec.carrier_call_id = carrier_call_id
        self._by_carrier[(session.spec.carrier_name, carrier_call_id)] = session.call_id
        return session.call_id

    def get(self, call_id: str) -> CallSession:
        """A live call, or CallError."""
        session = self.calls.get(call_id)
        if session is None:
            raise CallError(f"no live call {call_id!r}")
        return session

    async def hangup(self, call_id: str) -> None:
        """End a live call now."""
        self._end(self.get(call_id), "hung up via API")

    async def transfer(self, call_id: str, to: str) -> None:
        """Transfer a live call to `to`."""
        session = self.get(call_id)
        if session.state is not CallState.CONNECTED:
            raise CallError(f"call {call_id!r} is {session.state.value}, not connected")
        await session.transfer(to)

    async def drain(self, timeout: float) -> None:
        """Refuse new calls, let live ones finish for up to `timeout` seconds, then end the rest cleanly."""
        self.draining = True
        if self.calls:
            log.info("draining", live_calls=len(self.calls), timeout_secs=timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        await self.end_all("daemon stopping")

    async def end_all(self, reason: str) -> None:
        """End every live call and wait for their records to be final."""
        for session in list(self.calls.values()):
            self._end(session, reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self._idle.wait()

    # ------------------------------------------------------------------ counters

    @property
    def live_count(self) -> int:
        return len(self.calls)

    def carrier_for(self, name: str, call_id: str | None = None) -> Carrier | None:
        """Carrier `name` of a live call's graph (an older one while it drains), else of the current graph."""
        session = self.calls.get(call_id) if call_id is not None else None
        return (session.graph if session is not None else self.graph).carriers.get(name)

    def media_frames(self) -> tuple[int, int]:
        """(frames in, frames out) over all calls of this process."""
        live_in = sum(s.frames_in for s in self.calls.values())
        live_out = sum(s.frames_out for s in self.calls.values())
        return self.frames_in_done + live_in, self.frames_out_done + live_out

    # ------------------------------------------------------------------ internals

    def open_call(self, spec: CallSpec, agent_name: str | None) -> CallSession:
        """Create a call (ringing) for `spec` with the named agent, or the one its callee routes to."""
        graph = self.graph
        # Caller-supplied text (numbers from webhooks, API variables) may hold lone surrogates that no
        # record, log or JSON answer can encode: cleaned here, where a call is created.
        spec.caller, spec.callee = clean_text(spec.caller), clean_text(spec.callee)
        spec.variables = {clean_text(k): clean_text(v) for k, v in spec.variables.items()}
        if spec.voicemail_message is not None:
            spec.voicemail_message = clean_text(spec.voicemail_message)
        agent = agent_runtime(graph, agent_name or graph.agent_for(spec.callee).name)
        carrier = graph.carriers.get(spec.carrier_name, graph.carrier)
        session = CallSession(
            spec, graph, agent, carrier, emit=self._emit_clean, clock=self.clock, http=self.http
        )
        graph.acquire()
        self.calls[spec.call_id] = session
        if spec.carrier_call_id:
            self._by_carrier[(spec.carrier_name, spec.carrier_call_id)] = spec.call_id
        self._idle.clear()
        self._emit(session.started_event())
        timeout = self.media_timeouts.get(spec.direction, MEDIA_TIMEOUT_SECS["inbound"])
        asyncio.get_running_loop().call_later(timeout, self._media_timed_out, session)
        return session

    def _emit_clean(self, event: CallEvent) -> None:
        """A call's events to the observers, text from the caller or the engine made encodable first."""
        text = getattr(event, "text", None)
        if isinstance(text, str):
            cleaned = clean_text(text)
            if cleaned is not text:
                event = dataclasses.replace(event, text=cleaned)  # type: ignore[call-arg]
        self._emit(event)

    def _media_timed_out(self, session: CallSession) -> None:
        if session.state is not CallState.RINGING or session.call_id not in self.calls:
            return
        if session.spec.direction == "outbound":
            log.info("outbound call not answered", call_id=session.call_id)
            session.finish("no-answer", reason="not answered in time")
        else:
            log.warning(
                "media stream never connected", call_id=session.call_id, carrier=session.spec.carrier_name
            )
            session.finish(
                "failed", reason="media stream never connected", error="media stream never connected"
            )
        self._spawn(self._close(session))
        self._spawn(session.hang_up_carrier())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task, keeping a reference so it is not garbage-collected mid-flight."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _end(self, session: CallSession, reason: str) -> None:
        session.request_end(reason)
        if session.state is CallState.ENDED and not session.media_connected:  # it never connected
            self._spawn(self._close(session))

    async def _close(self, session: CallSession, *, final: bool = True) -> None:
        if self.calls.pop(session.call_id, None) is None:
            return
        if final and session.state is not CallState.ENDED:
            session.finish("failed", reason="call closed unexpectedly")
        self.frames_in_done += session.frames_in
        self.frames_out_done += session.frames_out
        self._by_carrier.pop((session.spec.carrier_name, session.spec.carrier_call_id), None)
        if not self.calls:
            self._idle.set()
        await session.graph.release()
