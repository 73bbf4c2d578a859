"""The SignalWire carrier: cXML over signed compatibility webhooks, Twilio-compatible media streams, LaML REST.

What is Twilio's is reused, not copied: the cXML builders and the Media Streams codec
(`patterd.protocols.twilio` through `protocols.signalwire`), run on the shared `providers.media_leg`.
What differs is here and in `protocols.signalwire`'s docstring: the space URL and `/api/laml` REST root,
project id + API token credentials, X-SignalWire-Signature keyed with the Signing Key, and the media
socket's `authBearerToken`. Webhook fields are Twilio's (CallSid, From, To, Direction, CallStatus,
CallDuration, AnsweredBy, RecordingUrl, RecordingStatus, RecordingDuration).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, urlencode

import structlog
from pydantic import Field, SecretStr, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from patterd.lazy import lazy_import
from patterd.protocols import jsontext
from patterd.protocols import signalwire as proto
from patterd.protocols.media_token import media_token, valid_media_token
from patterd.providers.kinds import CALL_TOKEN, CallRouter, DialRequest
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from patterd.providers.media_start import await_start, refused_other_call
from patterd.providers.rest_call import float_or_none
from patterd.providers.signalwire_rest import LamlRest
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
from patterd.providers.twilio import CALL_STATUS, FINAL_CARRIER_STATUSES, voice_call

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

log = structlog.get_logger("patterd.providers.signalwire")

CARRIER = "signalwire"
HOOKS = ("voice", "status", "recording", "amd", "transfer")
MEDIA_PATH = "/ws/signalwire/stream/{call_id}"
POLICY_VIOLATION = 1008
_KNOWN_CALLS_LIMIT = 10_000


class Options(ProviderOptions):
    """`carrier: {type: signalwire, ...}`."""

    project_id: str | None = Field(default_factory=env_str("SIGNALWIRE_PROJECT_ID"))
    token: SecretStr | None = Field(default_factory=env_secret("SIGNALWIRE_TOKEN"))
    space_url: str | None = Field(
        default_factory=env_str("SIGNALWIRE_SPACE_URL"),
        description="your space's host, e.g. example.signalwire.com; REST goes to https://{space}/api/laml/2010-04-01",
    )
    signing_key: SecretStr | None = Field(
        default_factory=env_secret("SIGNALWIRE_SIGNING_KEY"),
        description="the project's Signing Key (dashboard, API Credentials): SignalWire signs webhooks with it, "
        "not with the API token; required while validate_signatures is on",
    )
    base_url: str | None = Field(
        default=None, description="overrides https://{space_url} (a proxy, a test server)"
    )
    validate_signatures: bool = True
    status_callback_events: tuple[Literal["initiated", "ringing", "answered", "completed"], ...] = (
        "initiated",
        "ringing",
        "answered",
        "completed",
    )
    machine_detection: Literal["DetectMessageEnd", "Enable"] = "DetectMessageEnd"
    timeout_secs: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff_secs: float = Field(default=0.25, ge=0)
    stream_start_timeout_secs: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _credentials(self) -> Options:
        keys: list[tuple[str, str, object]] = [
            ("project_id", "SIGNALWIRE_PROJECT_ID", self.project_id),
            ("token", "SIGNALWIRE_TOKEN", self.token),
        ]
        if self.base_url is None:
            keys.append(("space_url", "SIGNALWIRE_SPACE_URL", self.space_url))
        if self.validate_signatures:
            keys.append(("signing_key", "SIGNALWIRE_SIGNING_KEY", self.signing_key))
        problem = missing_credentials("SignalWire carrier", keys)
        if problem:
            raise ValueError(problem)
        proto.space_base(self.base_url or self.space_url or "")  # a ValueError names a bad URL
        return self

    def api_base(self) -> str:
        return proto.space_base(self.base_url or self.space_url or "")


class SignalWireCarrier:
    """`kinds.Carrier` for SignalWire's compatibility API."""

    name = CARRIER

    def __init__(self, options: Options, ctx: BuildContext, rest: LamlRest) -> None:
        assert options.token is not None
        self.options = options
        self._ctx = ctx
        self.rest = rest
        self._token = options.token.get_secret_value()
        self._signing_key = options.signing_key.get_secret_value() if options.signing_key else ""
        self._call_ids: OrderedDict[str, str] = OrderedDict()  # CallSid → our call id

    def _remember(self, call_sid: str, call_id: str) -> None:
        self._call_ids[call_sid] = call_id
        self._call_ids.move_to_end(call_sid)
        while len(self._call_ids) > _KNOWN_CALLS_LIMIT:
            self._call_ids.popitem(last=False)

    def _public(self, hook: str, **query: str) -> str:
        return self._ctx.public_url(f"/webhooks/{CARRIER}/{hook}?" + urlencode(query))

    # ---------------------------------------------------------------- webhooks

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        """Verify X-SignalWire-Signature, then answer with cXML or apply a status/recording/amd callback."""
        if hook not in HOOKS:
            return Response(f"unknown SignalWire webhook {hook!r}; expected one of {', '.join(HOOKS)}", 404)
        body = (await request.body()).decode("utf-8", "replace")
        query = request.url.query
        url = self._ctx.public_url(request.url.path + ("?" + query if query else ""))
        form: list[tuple[str, str]] | None
        if request.headers.get("content-type", "").startswith("application/json"):
            form = None
            try:
                loaded = jsontext.loads(body)
            except jsontext.JSONError:
                loaded = {}
            fields = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        else:
            form = parse_qsl(body, keep_blank_values=True)
            fields = dict(form)
        if self.options.validate_signatures and not proto.validate_signature(
            self._signing_key, url, body, form, request.headers.get(proto.SIGNATURE_HEADER)
        ):
            router.count_rejection(CARRIER, "signature")
            log.warning("signalwire_bad_signature", hook=hook, url=url, call_sid=fields.get("CallSid"))
            return Response(f"invalid {proto.SIGNATURE_HEADER}", 403)
        if hook == "voice":
            return await self._voice(request, fields, router)
        if hook == "transfer":
            return Response(proto.dial(request.query_params.get("to", "")), media_type=proto.XML_CONTENT_TYPE)
        call_id = request.query_params.get("call_id") or self._call_ids.get(fields.get("CallSid", ""))
        call_id = call_id or router.call_id_for(CARRIER, fields.get("CallSid", ""))
        if call_id is None:
            log.info("signalwire_callback_for_unknown_call", hook=hook, call_sid=fields.get("CallSid"))
            return Response(status_code=204)
        if hook == "status":
            self._status(call_id, fields, router)
        elif hook == "recording":
            if fields.get("RecordingStatus", "completed") == "completed" and fields.get("RecordingUrl"):
                router.recording_ready(
                    call_id, fields["RecordingUrl"], float_or_none(fields.get("RecordingDuration"))
                )
        else:  # amd
            router.machine_detected(call_id, fields.get("AnsweredBy", "unknown"))
        return Response(status_code=204)

    async def _voice(self, request: Request, fields: Mapping[str, str], router: CallRouter) -> Response:
        call_sid = fields.get("CallSid")
        if not call_sid:
            return Response("SignalWire voice webhook without CallSid", 400)
        admission = router.admit(voice_call(CARRIER, call_sid, fields, request.query_params.get("call_id")))
        if admission is None:
            log.info("signalwire_call_rejected", call_sid=call_sid)
            return Response(proto.reject(), media_type=proto.XML_CONTENT_TYPE)
        self._remember(call_sid, admission.call_id)
        await admission.wait_recorded()  # the cXML answers the call: the record goes first
        path = MEDIA_PATH.replace("{call_id}", quote(admission.call_id, safe=""))
        token = admission.parameters.get(CALL_TOKEN)  # the cluster's: checked before the socket is accepted
        query = f"?{urlencode({CALL_TOKEN: token})}" if token else ""
        stream_url = self._ctx.public_url(path + query, websocket=True)
        parameters = {"call_id": admission.call_id, **admission.parameters}
        cxml = proto.connect_stream(stream_url, parameters, media_token(self._token, admission.call_id))
        return Response(cxml, media_type=proto.XML_CONTENT_TYPE)

    def _status(self, call_id: str, fields: Mapping[str, str], router: CallRouter) -> None:
        raw = fields.get("CallStatus", "")
        detail: dict[str, Any] = {"carrier_status": raw, "call_sid": fields.get("CallSid", "")}
        if fields.get("CallDuration"):
            detail["duration_secs"] = fields["CallDuration"]
        if fields.get("AnsweredBy"):
            detail["answered_by"] = fields["AnsweredBy"]
        router.carrier_status(call_id, CALL_STATUS.get(raw, raw), detail)
        if raw in FINAL_CARRIER_STATUSES:
            self._call_ids.pop(fields.get("CallSid", ""), None)

    # ---------------------------------------------------------------- media

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        """Refuse sockets without our bearer token or for unexpected calls (1008); else run the leg."""
        scheme, _, presented = websocket.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not valid_media_token(self._token, call_id, presented.strip()):
            router.count_rejection(CARRIER, "signature")
            log.warning("signalwire_media_bad_token", call_id=call_id)
            await websocket.close(POLICY_VIOLATION)
            return
        refused = await router.admit_media(call_id, websocket.query_params.get(CALL_TOKEN))
        if refused is not None:
            router.count_rejection(CARRIER, refused)
            log.warning("signalwire_media_refused", call_id=call_id, reason=refused)
            await websocket.close(POLICY_VIOLATION)
            return
        await websocket.accept()
        codec = proto.Codec(proto.StreamState())
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

    async def dial(self, request: DialRequest) -> str:
        """POST Calls.json; SignalWire fetches our voice webhook (carrying our call id) on answer."""
        data: list[tuple[str, str]] = [
            ("To", request.to),
            ("From", request.from_),
            ("Url", self._public("voice", call_id=request.call_id)),
            ("Method", "POST"),
            ("StatusCallback", self._public("status", call_id=request.call_id)),
            ("StatusCallbackMethod", "POST"),
        ]
        data += [("StatusCallbackEvent", event) for event in self.options.status_callback_events]
        if request.machine_detection:
            data += [
                ("MachineDetection", self.options.machine_detection),
                ("AsyncAmd", "true"),
                ("AsyncAmdStatusCallback", self._public("amd", call_id=request.call_id)),
                ("AsyncAmdStatusCallbackMethod", "POST"),
            ]
        sid = await self.rest.create_call(data)
        self._remember(sid, request.call_id)
        return sid

    async def hangup(self, carrier_call_id: str) -> None:
        """Update the call with Status=completed."""
        await self.rest.update_call(carrier_call_id, [("Status", "completed")])

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        """Point the call at our `transfer` hook, whose cXML dials `to` (ends the media stream)."""
        call_id = self._call_ids.get(carrier_call_id, "")
        url = self._public("transfer", to=to, call_id=call_id)
        await self.rest.update_call(carrier_call_id, [("Url", url), ("Method", "POST")])

    async def start_recording(self, carrier_call_id: str) -> None:
        """Record the live call; SignalWire POSTs /webhooks/signalwire/recording when it is saved."""
        call_id = self._call_ids.get(carrier_call_id, "")
        data = [
            ("RecordingStatusCallback", self._public("recording", call_id=call_id)),
            ("RecordingStatusCallbackEvent", "completed"),
            ("RecordingStatusCallbackMethod", "POST"),
        ]
        await self.rest.record(carrier_call_id, data)

    async def check(self) -> None:
        """Fetch the project (account): proves the space answers and the credentials are accepted."""
        await self.rest.account()


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[SignalWireCarrier]:
    """One aiohttp session (basic auth project id:API token) for the carrier's lifetime."""
    assert options.project_id is not None and options.token is not None
    credentials = f"{options.project_id}:{options.token.get_secret_value()}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
    timeout = aiohttp.ClientTimeout(total=options.timeout_secs)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        rest = LamlRest(
            session,
            options.api_base(),
            options.project_id,
            max_attempts=options.max_attempts,
            retry_backoff_secs=options.retry_backoff_secs,
        )
        yield SignalWireCarrier(options, ctx, rest)


async def check(provider: SignalWireCarrier) -> None:
    """`patterd check --probe`: are the credentials accepted?"""
    await provider.check()


SPEC = ProviderSpec(
    kind="carrier",
    name=CARRIER,
    options=Options,
    build=build,
    summary="SignalWire compatibility API: cXML over signed webhooks, Twilio-compatible media streams, REST calls",
    check=check,
    capabilities=Capabilities(
        streaming=True, needs_network=True, sample_rates=(8000,), notes="μ-law 8 kHz (PCMU) media streams"
    ),
    carrier=CarrierFacts(
        media_path=MEDIA_PATH,
        prices={"inbound_per_minute": 0.0066, "outbound_per_minute": 0.0066},  # US voice list prices
        title="SignalWire",
    ),
)
