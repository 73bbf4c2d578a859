"""The Plivo carrier: V3-signed webhooks → Plivo XML, bidirectional Audio Streaming legs, REST calls.

Wire formats: `patterd.protocols.plivo` (XML, stream messages), `protocols.plivo_signature`
(X-Plivo-Signature-V3), `providers.plivo_rest` (Voice API). Webhook fields as Plivo posts them to
answer_url / hangup_url / ring_url (CallUUID, From, To, Direction, CallStatus, RequestUUID,
HangupCause, Duration, BillDuration) and to a recording callback_url (record_url, recording_duration).
answer-machine detection posts `Machine` (true/false) to machine_detection_url. The media websocket carries no request signature we can rely on: its URL holds a per-call token
(`protocols.media_token`) that only our signed answer XML reveals.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

import structlog
from pydantic import Field, SecretStr, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from patterd.lazy import lazy_import
from patterd.protocols import plivo as proto
from patterd.protocols import plivo_signature as signature
from patterd.protocols.media_token import media_token, valid_media_token
from patterd.providers.kinds import CALL_TOKEN, CallRouter, DialRequest, InboundCall
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from patterd.providers.media_start import await_start, refused_other_call
from patterd.providers.plivo_rest import PlivoRest
from patterd.providers.rest_call import float_or_none
from patterd.providers.spec import (
    BuildContext,
    Capabilities,
    CarrierFacts,
    ProviderOptions,
    ProviderSpec,
    env_secret,
    env_str,
    missing_credentials,
)

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

log = structlog.get_logger("patterd.providers.plivo")

CARRIER = "plivo"
HOOKS = ("voice", "hangup", "ring", "amd", "stream", "transfer", "recording")
MEDIA_PATH = "/ws/plivo/stream/{call_id}"
POLICY_VIOLATION = 1008  # websocket close code for a refused media stream
# Plivo CallStatus → our status vocabulary (patterd.protocols.events.CallStatus).
CALL_STATUS = {
    "ringing": "ringing",
    "in-progress": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "failed": "failed",
    "timeout": "no-answer",
    "no-answer": "no-answer",
    "cancel": "canceled",
}
_KNOWN_CALLS_LIMIT = 10_000  # uuid → call id entries kept for callbacks that lack our id


class Options(ProviderOptions):
    """`carrier: {type: plivo, ...}`."""

    auth_id: str | None = Field(default_factory=env_str("PLIVO_AUTH_ID"))
    auth_token: SecretStr | None = Field(default_factory=env_secret("PLIVO_AUTH_TOKEN"))
    base_url: str = Field(
        default="https://api.plivo.com", description="REST root; calls go to {base_url}/v1/Account/{auth_id}/"
    )
    validate_signatures: bool = Field(
        default=True,
        description="check X-Plivo-Signature-V3 on every webhook (HMAC-SHA256 with the auth token)",
    )
    timeout_secs: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff_secs: float = Field(default=0.25, ge=0)
    stream_start_timeout_secs: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _credentials(self) -> Options:
        problem = missing_credentials(
            "Plivo carrier",
            (
                ("auth_id", "PLIVO_AUTH_ID", self.auth_id),
                ("auth_token", "PLIVO_AUTH_TOKEN", self.auth_token),
            ),
        )
        if problem:
            raise ValueError(problem)
        return self


class _Bounded(OrderedDict[str, str]):
    """A dict that forgets its oldest entries past _KNOWN_CALLS_LIMIT."""

    def put(self, key: str, value: str) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _KNOWN_CALLS_LIMIT:
            self.popitem(last=False)


class PlivoCarrier:
    """`kinds.Carrier` for Plivo: webhooks, Audio Streaming, REST over one aiohttp session."""

    name = CARRIER

    def __init__(self, options: Options, ctx: BuildContext, rest: PlivoRest) -> None:
        assert options.auth_id is not None and options.auth_token is not None  # the validator saw to it
        self.options = options
        self._ctx = ctx
        self.rest = rest
        self._token = options.auth_token.get_secret_value()
        self._call_ids = _Bounded()  # CallUUID or RequestUUID → our call id
        self._answered = _Bounded()  # RequestUUID → CallUUID, once the callee answered
        self._requests = _Bounded()  # RequestUUID → our call id, for the calls we placed

    # ---------------------------------------------------------------- webhooks

    def _public(self, hook: str, **query: str) -> str:
        return self._ctx.public_url(f"/webhooks/{CARRIER}/{hook}?" + urlencode(query))

    def _call_id(self, request: Request, fields: Mapping[str, str], router: CallRouter) -> str | None:
        call_id = request.query_params.get("call_id")
        if call_id:
            return call_id
        for key in ("CallUUID", "RequestUUID", "call_uuid"):
            known = self._call_ids.get(fields.get(key, ""))
            if known:
                return known
        return router.call_id_for(CARRIER, fields.get("CallUUID", "") or fields.get("call_uuid", ""))

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        """Verify the V3 signature, then answer `voice`/`transfer` with XML or apply a callback."""
        if hook not in HOOKS:
            return Response(f"unknown Plivo webhook {hook!r}; expected one of {', '.join(HOOKS)}", 404)
        body = (await request.body()).decode("utf-8", "replace")
        signed = parse_qsl(body, keep_blank_values=True)
        fields = dict(signed)
        query = request.url.query
        url = self._ctx.public_url(request.url.path + ("?" + query if query else ""))
        if self.options.validate_signatures and not signature.validate_signature(
            self._token,
            "POST",
            url,
            signed,
            request.headers.get(signature.NONCE_HEADER),
            request.headers.get(signature.SIGNATURE_HEADER),
        ):
            router.count_rejection(CARRIER, "signature")
            log.warning("plivo_bad_signature", hook=hook, url=url, call_uuid=fields.get("CallUUID"))
            return Response(f"invalid {signature.SIGNATURE_HEADER}", 403)
        if hook == "voice":
            return await self._voice(request, fields, router)
        if hook == "transfer":
            return Response(proto.dial(request.query_params.get("to", "")), media_type=proto.XML_CONTENT_TYPE)
        call_id = self._call_id(request, fields, router)
        if call_id is None:
            log.info("plivo_callback_for_unknown_call", hook=hook, call_uuid=fields.get("CallUUID"))
            return Response(status_code=204)
        if hook in ("hangup", "ring"):
            self._status(call_id, fields, router)
        elif hook == "amd":
            # Plivo reports `Machine=true` as soon as it hears one, with no end-of-greeting event: the
            # call's voicemail waits a grace period after machine_start (calls/voicemail).
            router.machine_detected(call_id, "machine_start" if fields.get("Machine") == "true" else "human")
        elif hook == "recording":
            if fields.get("record_url"):
                router.recording_ready(
                    call_id, fields["record_url"], float_or_none(fields.get("recording_duration"))
                )
        else:  # stream: StartStream / StopStream / DroppedStream, for the log only
            log.info("plivo_stream_status", call_id=call_id, event=fields.get("Event"))
        return Response(status_code=204)

    async def _voice(self, request: Request, fields: Mapping[str, str], router: CallRouter) -> Response:
        call_uuid = fields.get("CallUUID")
        if not call_uuid:
            return Response("Plivo answer webhook without CallUUID", 400)
        our_id = request.query_params.get("call_id") or None
        outbound = our_id is not None or fields.get("Direction", "inbound") == "outbound"
        admission = router.admit(
            InboundCall(
                carrier=CARRIER,
                carrier_call_id=call_uuid,
                caller=fields.get("From", ""),
                callee=fields.get("To", ""),
                direction="outbound" if outbound else "inbound",
                call_id=our_id,
            )
        )
        if admission is None:
            log.info("plivo_call_rejected", call_uuid=call_uuid)
            return Response(proto.hangup("rejected"), media_type=proto.XML_CONTENT_TYPE)
        self._call_ids.put(call_uuid, admission.call_id)
        if fields.get("RequestUUID"):
            self._answered.put(fields["RequestUUID"], call_uuid)
        await admission.wait_recorded()  # the XML answers the call: the record goes first
        path = MEDIA_PATH.replace("{call_id}", quote(admission.call_id, safe=""))
        # The socket URL carries our per-call token and the cluster's call token (too long for the
        # 512-byte extraHeaders); extraHeaders carries the call id back for the cross-check.
        query = {"token": media_token(self._token, admission.call_id)}
        if admission.parameters.get(CALL_TOKEN):
            query[CALL_TOKEN] = admission.parameters[CALL_TOKEN]
        stream_url = self._ctx.public_url(f"{path}?{urlencode(query)}", websocket=True)
        status_url = self._public("stream", call_id=admission.call_id)
        xml = proto.stream(stream_url, {"call_id": admission.call_id}, status_url)
        return Response(xml, media_type=proto.XML_CONTENT_TYPE)

    def _status(self, call_id: str, fields: Mapping[str, str], router: CallRouter) -> None:
        raw = fields.get("CallStatus", "ringing" if fields.get("Event") == "Ring" else "")
        detail: dict[str, Any] = {"carrier_status": raw, "call_uuid": fields.get("CallUUID", "")}
        for key, name in (
            ("Duration", "duration_secs"),
            ("BillDuration", "bill_duration_secs"),
            ("HangupCause", "hangup_cause"),
        ):
            if fields.get(key):
                detail[name] = fields[key]
        router.carrier_status(call_id, CALL_STATUS.get(raw, raw), detail)

    # ---------------------------------------------------------------- media

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        """Refuse sockets without our token or for unexpected calls (1008); else run the media leg."""
        if not valid_media_token(self._token, call_id, websocket.query_params.get("token")):
            router.count_rejection(CARRIER, "signature")
            log.warning("plivo_media_bad_token", call_id=call_id)
            await websocket.close(POLICY_VIOLATION)
            return
        refused = await router.admit_media(call_id, websocket.query_params.get(CALL_TOKEN))
        if refused is not None:
            router.count_rejection(CARRIER, refused)
            log.warning("plivo_media_refused", call_id=call_id, reason=refused)
            await websocket.close(POLICY_VIOLATION)
            return
        await websocket.accept()
        codec = proto.StreamState()  # Plivo's stream state is its codec
        frames = MediaSocket(websocket, CARRIER, router, self._ctx.media_idle_timeout_secs)
        first = await await_start(
            frames, codec, timeout_secs=self.options.stream_start_timeout_secs, start="start"
        )
        if await refused_other_call(first, call_id, frames, websocket, router):
            return
        leg = MediaLeg(websocket, codec, frames, first_events=[first])
        try:
            await router.run_media(call_id, leg)
        finally:
            await leg.close()

    # ---------------------------------------------------------------- REST

    def _call_uuid(self, carrier_call_id: str) -> str:
        """The CallUUID for a RequestUUID that was answered; other ids as they are."""
        return self._answered.get(carrier_call_id, carrier_call_id)

    async def dial(self, request: DialRequest) -> str:
        """POST Call/; Plivo fetches our answer_url (carrying our call id) when the callee answers."""
        fields = {
            "from": request.from_.lstrip("+"),
            "to": request.to.lstrip("+"),
            "answer_url": self._public("voice", call_id=request.call_id),
            "answer_method": "POST",
            "hangup_url": self._public("hangup", call_id=request.call_id),
            "hangup_method": "POST",
            "ring_url": self._public("ring", call_id=request.call_id),
            "ring_method": "POST",
        }
        if request.machine_detection:
            fields["machine_detection"] = "true"
            fields["machine_detection_url"] = self._public("amd", call_id=request.call_id)
            fields["machine_detection_method"] = "POST"
        request_uuid = await self.rest.create_call(fields)
        self._call_ids.put(request_uuid, request.call_id)
        self._requests.put(request_uuid, request.call_id)
        return request_uuid

    async def hangup(self, carrier_call_id: str) -> None:
        """DELETE the call; an outbound call nobody answered yet is cancelled through its request."""
        if carrier_call_id in self._requests and carrier_call_id not in self._answered:
            await self.rest.cancel_request(carrier_call_id)
            return
        await self.rest.hangup_call(self._call_uuid(carrier_call_id))

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        """Point the caller's leg at our `transfer` hook, whose XML dials `to` (ends the stream)."""
        call_id = self._call_ids.get(carrier_call_id, "")
        await self.rest.transfer(
            self._call_uuid(carrier_call_id), self._public("transfer", to=to, call_id=call_id)
        )

    async def start_recording(self, carrier_call_id: str) -> None:
        """Record the live call; Plivo POSTs /webhooks/plivo/recording when the file is ready."""
        call_id = self._call_ids.get(carrier_call_id, "")
        await self.rest.record(self._call_uuid(carrier_call_id), self._public("recording", call_id=call_id))

    async def check(self) -> None:
        """Fetch the account: proves the base URL answers and the credentials are accepted."""
        await self.rest.account()


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[PlivoCarrier]:
    """One aiohttp session (basic auth auth_id:auth_token) for the carrier's lifetime."""
    assert options.auth_id is not None and options.auth_token is not None
    credentials = f"{options.auth_id}:{options.auth_token.get_secret_value()}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
    timeout = aiohttp.ClientTimeout(total=options.timeout_secs)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        rest = PlivoRest(
            session,
            options.base_url,
            options.auth_id,
            max_attempts=options.max_attempts,
            retry_backoff_secs=options.retry_backoff_secs,
        )
        yield PlivoCarrier(options, ctx, rest)


async def check(provider: PlivoCarrier) -> None:
    """`patterd check --probe`: are the credentials accepted?"""
    await provider.check()


SPEC = ProviderSpec(
    kind="carrier",
    name=CARRIER,
    options=Options,
    build=build,
    summary="Plivo Voice: V3-signed webhooks, bidirectional Audio Streaming, REST calls",
    check=check,
    capabilities=Capabilities(
        streaming=True, needs_network=True, sample_rates=(8000,), notes="μ-law 8 kHz Audio Streaming"
    ),
    carrier=CarrierFacts(
        media_path=MEDIA_PATH,
        prices={"inbound_per_minute": 0.0055, "outbound_per_minute": 0.01},  # US local voice list prices
        title="Plivo",
    ),
)
