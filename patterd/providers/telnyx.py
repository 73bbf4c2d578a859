"""The Telnyx carrier: Call Control webhooks, the bidirectional media websocket, and REST commands.

Wire formats live in `patterd.protocols.telnyx` (docs followed are named there). This module
moves bytes: it verifies and dispatches webhooks, answers the HTTP request at once and sends the
resulting Call Control command in a background task, runs a call's media websocket as a
`CarrierLeg`, and speaks the REST API (`https://api.telnyx.com/v2`, Bearer auth) with retries
that reuse the same `command_id`, so Telnyx never acts on a command twice.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from patterd.errors import (
    ProviderError,
    ProviderProtocolError,
)
from patterd.lazy import lazy_import
from patterd.protocols import telnyx as proto
from patterd.providers.kinds import CALL_TOKEN, Admission, CallRouter, DialRequest, InboundCall
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from patterd.providers.spec import BuildContext, Capabilities, CarrierFacts, ProviderSpec
from patterd.providers.telnyx_rest import CARRIER, TelnyxRest
from patterd.providers.telnyx_rest import UNAUTHENTICATED_WARNING as UNAUTHENTICATED_WARNING  # re-exported
from patterd.providers.telnyx_rest import TelnyxOptions as TelnyxOptions  # re-exported: the spec's options

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

log = structlog.get_logger(__name__)

_SEEN_EVENTS_MAX = 4096  # webhook ids remembered for de-duplication (Telnyx retries for minutes, not days)


class TelnyxCarrier(TelnyxRest):
    """The live Telnyx carrier (one per config generation); see `kinds.Carrier`."""

    name = CARRIER

    def __init__(self, options: TelnyxOptions, ctx: BuildContext, session: aiohttp.ClientSession) -> None:
        super().__init__(options, session)
        self.ctx = ctx
        self.warnings: list[str] = []
        self._seen_events: OrderedDict[str, None] = OrderedDict()
        self._calls: dict[str, str] = {}  # call_control_id → our call id
        self._stream_on_answer: dict[str, str] = {}  # dialed without stream_url: call_control_id → call id
        self._amd_reported: set[str] = set()  # call ids whose one AMD verdict went to the router
        self._tasks: set[asyncio.Task[None]] = set()
        for warning in options.config_warnings():
            self.warnings.append(warning)
            log.warning(warning)

    # ------------------------------------------------------------ webhooks

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        """Verify, de-duplicate and dispatch one Call Control webhook; always quick."""
        if hook != "voice":
            return _error(404, "not_found", f"unknown Telnyx webhook {hook!r}; expected 'voice'")
        raw = await request.body()
        if self.options.public_key:
            reason = proto.verify_signature(
                self.options.public_key,
                request.headers.get(proto.SIGNATURE_HEADER),
                request.headers.get(proto.TIMESTAMP_HEADER),
                raw,
                self.ctx.clock.now().timestamp(),
                self.options.signature_tolerance_secs,
            )
            if reason is not None:
                router.count_rejection(CARRIER, reason)
                log.warning("telnyx webhook refused", reason=reason)
                return _error(403, "forbidden", f"Telnyx webhook signature check failed: {reason}")
        try:
            event = proto.parse_webhook(raw)
        except proto.TelnyxProtocolError as exc:
            router.count_rejection(CARRIER, "malformed")
            return _error(400, "bad_request", str(exc))
        if event.event_id:
            if event.event_id in self._seen_events:
                log.info(
                    "telnyx webhook retried; already handled",
                    event_id=event.event_id,
                    event_type=event.event_type,
                )
                return Response(status_code=200)
            self._seen_events[event.event_id] = None
            while len(self._seen_events) > _SEEN_EVENTS_MAX:
                self._seen_events.popitem(last=False)
        self._dispatch(event, router)
        return Response(status_code=200)

    def _dispatch(self, event: proto.WebhookEvent, router: CallRouter) -> None:
        match event:
            case proto.CallInitiated(direction="incoming"):
                self._inbound(event, router)
            case proto.CallAnswered():
                call_id = self._stream_on_answer.pop(event.call_control_id, None)
                if call_id is not None:
                    body = proto.streaming_start_command(
                        self._stream_url(call_id),
                        client_state=proto.encode_client_state(call_id),
                        command_id=proto.command_id_for(
                            event.event_id or event.call_control_id, "streaming_start"
                        ),
                    )
                    self._background(self._command(event.call_control_id, "streaming_start", body))
            case proto.CallHangup():
                call_id = self._call_id(event, router)
                self._stream_on_answer.pop(event.call_control_id, None)
                if call_id is not None:
                    detail = {
                        "hangup_cause": event.hangup_cause,
                        "hangup_source": event.hangup_source,
                        "sip_hangup_cause": event.sip_hangup_cause,
                    }
                    router.carrier_status(call_id, proto.status_for_hangup(event.hangup_cause), detail)
                    self._amd_reported.discard(call_id)
                self._calls.pop(event.call_control_id, None)
            case proto.MachineDetectionEnded() | proto.MachineGreetingEnded():
                call_id = self._call_id(event, router)
                if call_id is not None:
                    self._machine_verdict(call_id, event, router)
            case proto.RecordingSaved():
                call_id = self._call_id(event, router)
                if call_id is not None and event.url:
                    router.recording_ready(call_id, event.url, _duration(event))
            case proto.StreamingFailed():
                log.warning(
                    "telnyx media stream failed",
                    call_control_id=event.call_control_id,
                    reason=event.failure_reason,
                )
            case _:
                # call.dtmf.received duplicates the media stream's dtmf frame, which the session
                # already gets in order with the audio; streaming.started/stopped are informational.
                log.debug(
                    "telnyx webhook", event_type=event.event_type, call_control_id=event.call_control_id
                )

    def _machine_verdict(
        self,
        call_id: str,
        event: proto.MachineDetectionEnded | proto.MachineGreetingEnded,
        router: CallRouter,
    ) -> None:
        """Report one AMD verdict per call: the session leaves a voicemail on each machine verdict.

        In greeting_end/detect_words mode Telnyx always follows a `machine` detection with
        `call.machine.greeting.ended`, so we wait for it: the voicemail then starts after the beep.
        """
        if call_id in self._amd_reported:
            return
        answered = proto.answered_by(event)
        waits_for_greeting = self.options.machine_detection_mode in ("greeting_end", "detect_words")
        if answered == "machine_start" and waits_for_greeting:
            log.info("telnyx AMD: machine; waiting for the greeting to end", call_id=call_id)
            return
        self._amd_reported.add(call_id)
        router.machine_detected(call_id, answered)

    def _inbound(self, event: proto.CallInitiated, router: CallRouter) -> None:
        key = event.event_id or event.call_control_id
        try:
            admission = router.admit(
                InboundCall(
                    carrier=CARRIER,
                    carrier_call_id=event.call_control_id,
                    caller=event.from_,
                    callee=event.to,
                )
            )
        except Exception:  # a switchboard bug must still leave the caller with an answer
            log.exception("telnyx admit failed; rejecting", call_control_id=event.call_control_id)
            admission = None
        if admission is None:
            body = proto.reject_command(command_id=proto.command_id_for(key, "reject"))
            self._background(self._command(event.call_control_id, "reject", body))
            return
        self._calls[event.call_control_id] = admission.call_id
        body = proto.answer_command(
            self._stream_url(admission.call_id, admission.parameters.get(CALL_TOKEN)),
            client_state=proto.encode_client_state(admission.call_id),
            command_id=proto.command_id_for(key, "answer"),
        )
        self._background(self._answer(admission, event.call_control_id, body))

    async def _answer(self, admission: Admission, call_control_id: str, body: dict[str, Any]) -> None:
        """Answer once the call's record is durable: a crash after Telnyx hears `answer` loses no call."""
        await admission.wait_recorded()
        await self._command(call_control_id, "answer", body)

    def _call_id(self, event: proto.CallControlEvent, router: CallRouter) -> str | None:
        return (
            event.call_id
            or self._calls.get(event.call_control_id)
            or router.call_id_for(CARRIER, event.call_control_id)
        )

    def _stream_url(self, call_id: str, token: str | None = None) -> str:
        # Telnyx's media wire has no custom parameters: the call token rides in the stream URL's query
        query = "?" + urlencode({CALL_TOKEN: token}) if token else ""
        return self.ctx.public_url(f"/ws/telnyx/stream/{call_id}{query}", websocket=True)

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        async def run() -> None:
            try:
                await work
            except ProviderError as exc:
                log.error("telnyx command failed", error=str(exc))

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait until every command sent on behalf of a webhook has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ media

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        """Accept the media websocket of a call we answered or dialed, then run the call on it."""
        if not router.expects_media(call_id) and not router.adopts_media():
            router.count_rejection(CARRIER, "unexpected_media")
            log.warning("telnyx media websocket refused: not a call awaiting media", call_id=call_id)
            await websocket.close(code=1008)
            return
        refused = await router.admit_media(call_id, websocket.query_params.get(CALL_TOKEN))
        if refused is not None:  # a call another replica answered comes with a valid, unused token
            router.count_rejection(CARRIER, "unexpected_media" if refused == "unknown_call" else refused)
            log.warning("telnyx media websocket refused", call_id=call_id, reason=refused)
            await websocket.close(code=1008)
            return
        await websocket.accept()
        frames = MediaSocket(websocket, CARRIER, router, self.ctx.media_idle_timeout_secs)
        # Telnyx plays whole 20 ms frames: the partial frame before a mark is padded with silence
        leg = MediaLeg(websocket, proto.TelnyxCodec(), frames, pad_marks=True)
        try:
            await router.run_media(call_id, leg)
        finally:
            await leg.close()

    # ------------------------------------------------------------ REST

    async def dial(self, request: DialRequest) -> str:
        """`POST /v2/calls`; returns the new leg's call_control_id."""
        stream_url = self._stream_url(request.call_id)
        body = proto.dial_command(
            connection_id=self._connection_id,
            to=request.to,
            from_=request.from_,
            webhook_url=self.ctx.public_url("/webhooks/telnyx/voice"),
            client_state=proto.encode_client_state(request.call_id),
            command_id=proto.command_id_for(request.call_id, "dial"),
            stream_url=stream_url if self.options.stream_on_dial else None,
            answering_machine_detection=self.options.machine_detection_mode
            if request.machine_detection
            else None,
        )
        data = await self._request("POST", "/v2/calls", body)
        call_control_id = data.get("call_control_id") if isinstance(data, dict) else None
        if not isinstance(call_control_id, str) or not call_control_id:
            raise ProviderProtocolError(
                f"Telnyx dial answered without data.call_control_id: {data!r}", provider=CARRIER
            )
        self._calls[call_control_id] = request.call_id
        if not self.options.stream_on_dial:
            self._stream_on_answer[call_control_id] = request.call_id
        return call_control_id


def _duration(event: proto.RecordingSaved) -> float | None:
    try:
        start = datetime.fromisoformat(event.recording_started_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(event.recording_ended_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (end - start).total_seconds())


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@asynccontextmanager
async def build(options: TelnyxOptions, ctx: BuildContext) -> AsyncIterator[TelnyxCarrier]:
    """Open the carrier's HTTP session; on exit finish pending commands and close it."""
    async with aiohttp.ClientSession() as session:
        carrier = TelnyxCarrier(options, ctx, session)
        try:
            yield carrier
        finally:
            await carrier.settle()


async def check(carrier: TelnyxCarrier) -> None:
    """`patterd check --probe`: the API key works and connection_id names a Call Control application."""
    await carrier.probe()


SPEC = ProviderSpec(
    kind="carrier",
    name="telnyx",
    options=TelnyxOptions,
    build=build,
    summary="Telnyx Call Control v2 with bidirectional PCMU media streaming",
    check=check,
    capabilities=Capabilities(
        streaming=True,
        needs_network=True,
        sample_rates=(8000,),
        notes="AMD via answering_machine_detection; Ed25519 webhook signatures when public_key is set",
    ),
    carrier=CarrierFacts(
        media_path="/ws/telnyx/stream/{call_id}",
        prices={"inbound_per_minute": 0.0035, "outbound_per_minute": 0.005},  # US local voice, early 2026
        title="Telnyx",
    ),
)
