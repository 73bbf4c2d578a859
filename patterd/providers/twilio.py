"""The Twilio carrier: signed webhooks → TwiML and Media Streams on the one MediaLeg (REST in twilio_rest).

Followed: twilio.com/docs/usage/webhooks/webhooks-security and twilio-python
`twilio/request_validator.py` (signatures, also on the media websocket upgrade),
/docs/voice/twiml/stream + /docs/voice/media-streams/websocket-messages (bidirectional
<Connect><Stream>), /docs/voice/api/call-resource (create: Url, StatusCallback,
StatusCallbackEvent, MachineDetection, AsyncAmd, AsyncAmdStatusCallback; update: Status=completed,
Twiml), /docs/voice/api/recording (create on a live call, RecordingStatusCallback),
/docs/voice/answering-machine-detection (AnsweredBy values), /docs/phone-numbers/api/incomingphonenumber-resource
(VoiceUrl), /docs/usage/twilios-response (error JSON: code, message, more_info, status).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from patterd.lazy import lazy_import
from patterd.protocols import jsontext
from patterd.protocols import twilio as proto
from patterd.protocols.events import StreamStarted
from patterd.providers.kinds import CALL_TOKEN, CallRouter, InboundCall
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from patterd.providers.media_start import await_start, refused_other_call
from patterd.providers.rest_call import float_or_none
from patterd.providers.spec import BuildContext, Capabilities, CarrierFacts, ProviderSpec
from patterd.providers.twilio_rest import CARRIER, TwilioRest
from patterd.providers.twilio_rest import Options as Options  # re-exported: the spec's options

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

log = structlog.get_logger("patterd.providers.twilio")

HOOKS = ("voice", "status", "recording", "amd")
POLICY_VIOLATION = 1008  # websocket close code for a refused media stream
# Twilio CallStatus → our status vocabulary (patterd.protocols.events.CallStatus).
CALL_STATUS = {
    "queued": "ringing",
    "initiated": "ringing",
    "ringing": "ringing",
    "in-progress": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "canceled",
}
FINAL_CARRIER_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})


# ------------------------------------------------------------------ the carrier


def voice_call(carrier: str, call_sid: str, fields: Mapping[str, str], our_id: str | None) -> InboundCall:
    """The call a TwiML voice webhook announces (SignalWire's cXML webhooks send the same form fields).

    `our_id` is the `call_id` query parameter of a call we placed: such a call, or one whose
    `Direction` says outbound, is outbound.
    """
    outbound = bool(our_id) or fields.get("Direction", "inbound").startswith("outbound")
    return InboundCall(
        carrier=carrier,
        carrier_call_id=call_sid,
        caller=fields.get("From", ""),
        callee=fields.get("To", ""),
        direction="outbound" if outbound else "inbound",
        call_id=our_id or None,
    )


class TwilioCarrier(TwilioRest):
    """`kinds.Carrier` for Twilio: webhooks, Media Streams, REST over one aiohttp session."""

    name = CARRIER

    # ---------------------------------------------------------------- webhooks

    def _call_id(self, request: Request, fields: Mapping[str, str], router: CallRouter) -> str | None:
        call_id = request.query_params.get("call_id")
        if call_id:
            return call_id
        call_sid = fields.get("CallSid", "")
        return self._call_ids.get(call_sid) or router.call_id_for(CARRIER, call_sid)

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        """Verify the signature, then answer `voice` with TwiML or apply a status/recording/amd callback."""
        if hook not in HOOKS:
            return Response(f"unknown Twilio webhook {hook!r}; expected one of {', '.join(HOOKS)}", 404)
        body = (await request.body()).decode("utf-8", "replace")
        query = request.url.query
        url = self._ctx.public_url(request.url.path + ("?" + query if query else ""))
        signed: list[tuple[str, str]] | str
        if request.headers.get("content-type", "").startswith("application/json"):
            signed = body
            try:
                loaded = jsontext.loads(body)  # deep nesting or bad text is a JSONError, never a 500
            except jsontext.JSONError:
                loaded = {}
            fields = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        else:
            signed = parse_qsl(body, keep_blank_values=True)
            fields = dict(signed)
        if self.options.validate_signatures and not proto.validate_signature(
            self._token, url, signed, request.headers.get(proto.SIGNATURE_HEADER)
        ):
            router.count_rejection(CARRIER, "signature")
            log.warning("twilio_bad_signature", hook=hook, url=url, call_sid=fields.get("CallSid"))
            return Response("invalid X-Twilio-Signature", 403)
        if hook == "voice":
            return await self._voice(request, fields, router)
        call_id = self._call_id(request, fields, router)
        if call_id is None:
            log.info("twilio_callback_for_unknown_call", hook=hook, call_sid=fields.get("CallSid"))
            return Response(status_code=204)
        if hook == "status":
            self._status(call_id, fields, router)
        elif hook == "recording":
            status = fields.get("RecordingStatus", "completed")
            if status == "completed" and fields.get("RecordingUrl"):
                router.recording_ready(
                    call_id, fields["RecordingUrl"], float_or_none(fields.get("RecordingDuration"))
                )
            else:
                log.info("twilio_recording_status", call_id=call_id, status=status)
        else:  # amd
            router.machine_detected(call_id, fields.get("AnsweredBy", "unknown"))
        return Response(status_code=204)

    async def _voice(self, request: Request, fields: Mapping[str, str], router: CallRouter) -> Response:
        call_sid = fields.get("CallSid")
        if not call_sid:
            return Response("Twilio voice webhook without CallSid", 400)
        admission = router.admit(voice_call(CARRIER, call_sid, fields, request.query_params.get("call_id")))
        if admission is None:
            log.info("twilio_call_rejected", call_sid=call_sid)
            return Response(proto.reject(), media_type=proto.TWIML_CONTENT_TYPE)
        self._remember(call_sid, admission.call_id)
        await admission.wait_recorded()  # the TwiML tells Twilio the call is answered: the record goes first
        stream_url = self._ctx.public_url(f"/ws/stream/{quote(admission.call_id, safe='')}", websocket=True)
        parameters = {"call_id": admission.call_id, **admission.parameters}
        return Response(proto.connect_stream(stream_url, parameters), media_type=proto.TWIML_CONTENT_TYPE)

    def _status(self, call_id: str, fields: Mapping[str, str], router: CallRouter) -> None:
        raw = fields.get("CallStatus", "")
        detail: dict[str, Any] = {"carrier_status": raw, "call_sid": fields.get("CallSid", "")}
        for key, name in (("CallDuration", "duration_secs"), ("SipResponseCode", "sip_response_code")):
            if fields.get(key):
                detail[name] = fields[key]
        if fields.get("AnsweredBy"):
            detail["answered_by"] = fields["AnsweredBy"]
        router.carrier_status(call_id, CALL_STATUS.get(raw, raw), detail)
        if raw in FINAL_CARRIER_STATUSES:
            self._call_ids.pop(fields.get("CallSid", ""), None)

    # ---------------------------------------------------------------- media

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        """Refuse unsigned or unexpected media sockets (1008); otherwise run the call on a MediaLeg."""
        if self.options.validate_signatures:
            query = websocket.url.query
            url = self._ctx.public_url(websocket.url.path + ("?" + query if query else ""), websocket=True)
            if not proto.validate_signature(
                self._token, url, None, websocket.headers.get(proto.SIGNATURE_HEADER)
            ):
                router.count_rejection(CARRIER, "signature")
                log.warning("twilio_media_bad_signature", call_id=call_id, url=url)
                await websocket.close(POLICY_VIOLATION)
                return
        # A call another replica answered is unknown here until its call token (a stream parameter) is read.
        if not router.expects_media(call_id) and not router.adopts_media():
            router.count_rejection(CARRIER, "unknown_call")
            log.warning("twilio_media_unexpected", call_id=call_id)
            await websocket.close(POLICY_VIOLATION)
            return
        await websocket.accept()
        codec = proto.TwilioCodec(proto.StreamState())
        frames = MediaSocket(websocket, CARRIER, router, self._ctx.media_idle_timeout_secs)
        first = await await_start(
            frames, codec, timeout_secs=self.options.stream_start_timeout_secs, start="start"
        )
        if await refused_other_call(first, call_id, frames, websocket, router):
            return
        token = first.parameters.get(CALL_TOKEN) if isinstance(first, StreamStarted) else None
        refused = await router.admit_media(call_id, token)
        if refused is not None:
            frames.stop()
            router.count_rejection(CARRIER, refused)
            log.warning("twilio_media_refused", call_id=call_id, reason=refused)
            await websocket.close(POLICY_VIOLATION)
            return
        leg = MediaLeg(websocket, codec, frames, first_events=[first])
        try:
            await router.run_media(call_id, leg)
        finally:
            await leg.close()


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[TwilioCarrier]:
    """One aiohttp session (basic auth sid:token) for the carrier's lifetime."""
    assert options.account_sid is not None and options.auth_token is not None
    credentials = f"{options.account_sid}:{options.auth_token.get_secret_value()}".encode()
    # Built by hand: aiohttp.BasicAuth is deprecated in recent aiohttp, encode_basic_auth is too new.
    headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
    timeout = aiohttp.ClientTimeout(total=options.timeout_secs)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        yield TwilioCarrier(options, ctx, session)


async def check(provider: TwilioCarrier) -> None:
    """`patterd check --probe`: are the credentials accepted?"""
    await provider.check()


SPEC = ProviderSpec(
    kind="carrier",
    name="twilio",
    options=Options,
    build=build,
    summary="Twilio Programmable Voice: signed webhooks, bidirectional Media Streams, REST calls",
    check=check,
    capabilities=Capabilities(
        streaming=True, needs_network=True, sample_rates=(8000,), notes="μ-law 8 kHz Media Streams"
    ),
    carrier=CarrierFacts(
        media_path="/ws/stream/{call_id}",
        prices={"inbound_per_minute": 0.0085, "outbound_per_minute": 0.014},  # US local voice, early 2026
        title="Twilio",
    ),
)
