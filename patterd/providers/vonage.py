"""The Vonage carrier: JWT-signed webhooks → NCCO, a websocket leg of L16 16 kHz audio, REST calls.

Wire formats: `patterd.protocols.vonage` (NCCO, websocket codec), `providers.vonage_jwt` (the signed
webhooks' HS256 token, our RS256 application token), `providers.vonage_rest` (Voice API). Webhooks as
Vonage POSTs them (JSON; set the application's answer and event URLs to HTTP POST): the answer
webhook {uuid, conversation_uuid, from, to}, the event webhook {uuid, status, direction, from, to,
duration, detail}; machine detection reports `status` human/machine on the event webhook.

The websocket runs on the shared `MediaLeg`: marks are Vonage's `notify` commands, a barge-in its
`clear`, every agent frame a whole 640-byte message (a partial one is padded with silence before a
mark). The websocket URL holds a per-call token (`protocols.media_token`) that only our answer NCCO
reveals. Vonage records through NCCO `record` actions, not a REST call on a live call:
`records_calls = False`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import structlog
from pydantic import Field, SecretStr, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from patterd.errors import ProviderError
from patterd.lazy import lazy_import
from patterd.protocols import jsontext
from patterd.protocols import vonage as proto
from patterd.protocols.media_token import media_token, valid_media_token
from patterd.providers import vonage_jwt
from patterd.providers.kinds import CALL_TOKEN, CallRouter, DialRequest, InboundCall
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from patterd.providers.media_start import await_start, refused_other_call
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
from patterd.providers.vonage_rest import VonageRest

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported when the carrier is built (start-up, issue 14)

log = structlog.get_logger("patterd.providers.vonage")

CARRIER = "vonage"
HOOKS = ("voice", "event")
MEDIA_PATH = "/ws/vonage/stream/{call_id}"
POLICY_VIOLATION = 1008  # websocket close code for a refused media stream
# Vonage call states (event webhook `status`) → our status vocabulary; the rest are logged only.
CALL_STATUS = {
    "ringing": "ringing",
    "answered": "in_progress",
    "completed": "completed",
    "busy": "busy",
    "cancelled": "canceled",
    "unanswered": "no-answer",
    "timeout": "no-answer",
    "rejected": "failed",
    "failed": "failed",
}
MACHINE_STATUS = {"machine": "machine_start", "human": "human"}
_KNOWN_CALLS_LIMIT = 10_000  # uuid → call id entries kept for events that lack our id


class Options(ProviderOptions):
    """`carrier: {type: vonage, ...}`."""

    application_id: str | None = Field(default_factory=env_str("VONAGE_APPLICATION_ID"))
    private_key: SecretStr | None = Field(
        default_factory=env_secret("VONAGE_PRIVATE_KEY"),
        description="the application's RSA private key: PEM text, or a path to the key file (relative to the config)",
    )
    signature_secret: SecretStr | None = Field(
        default_factory=env_secret("VONAGE_SIGNATURE_SECRET"),
        description="the account's signature secret, which signs webhooks (HS256 JWT); $VONAGE_SIGNATURE_SECRET",
    )
    base_url: str = Field(
        default="https://api.nexmo.com", description="REST root; calls go to {base_url}/v1/calls"
    )
    validate_signatures: bool = Field(
        default=True, description="check the signed-webhook JWT (Authorization: Bearer) on every webhook"
    )
    timeout_secs: float = Field(default=10.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff_secs: float = Field(default=0.25, ge=0)
    stream_start_timeout_secs: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _credentials(self) -> Options:
        keys: list[tuple[str, str, object]] = [
            ("application_id", "VONAGE_APPLICATION_ID", self.application_id),
            ("private_key", "VONAGE_PRIVATE_KEY", self.private_key),
        ]
        if self.validate_signatures:
            keys.append(("signature_secret", "VONAGE_SIGNATURE_SECRET", self.signature_secret))
        problem = missing_credentials("Vonage carrier", keys)
        if problem:
            raise ValueError(problem)
        try:
            vonage_jwt.check_available()
        except vonage_jwt.VonageJwtUnavailable as exc:
            raise ValueError(str(exc)) from None
        return self


class _Bounded(OrderedDict[str, str]):
    """A dict that forgets its oldest entries past _KNOWN_CALLS_LIMIT."""

    def put(self, key: str, value: str) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > _KNOWN_CALLS_LIMIT:
            self.popitem(last=False)


class VonageCarrier:
    """`kinds.Carrier` for Vonage: signed webhooks, the websocket leg, REST over one aiohttp session."""

    name = CARRIER
    records_calls = False  # recording is an NCCO action, not a command on a live call

    def __init__(self, options: Options, ctx: BuildContext, rest: VonageRest, private_key_pem: str) -> None:
        assert options.application_id is not None
        self.options = options
        self._ctx = ctx
        self.rest = rest
        secret = options.signature_secret
        self._signature_secret = secret.get_secret_value() if secret is not None else ""
        # The media token's key: the signature secret, else the private key (both only ours and Vonage's).
        self._media_secret = self._signature_secret or private_key_pem
        self._call_ids = _Bounded()  # Vonage uuid → our call id

    # ---------------------------------------------------------------- webhooks

    def _public(self, hook: str, **query: str) -> str:
        return self._ctx.public_url(f"/webhooks/{CARRIER}/{hook}?" + urlencode(query))

    def _signed(self, request: Request, body: bytes) -> bool:
        claims = vonage_jwt.verify_webhook(
            vonage_jwt.bearer(request.headers.get("authorization")), self._signature_secret, body
        )
        if claims is None:
            return False
        claimed_app = claims.get("application_id")  # present on Voice webhooks: must be our application
        return claimed_app is None or claimed_app == self.options.application_id

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        """Verify the signed-webhook JWT, then answer `voice` with an NCCO or apply an `event`."""
        if hook not in HOOKS:
            return Response(f"unknown Vonage webhook {hook!r}; expected one of {', '.join(HOOKS)}", 404)
        body = await request.body()
        if self.options.validate_signatures and not self._signed(request, body):
            router.count_rejection(CARRIER, "signature")
            log.warning("vonage_bad_signature", hook=hook)
            return Response("invalid or missing signed-webhook JWT", 403)
        try:
            fields = jsontext.loads(body) if body.strip() else {}
        except jsontext.JSONError as exc:
            return Response(f"Vonage webhook body is not JSON: {exc}", 400)
        if not isinstance(fields, dict):
            return Response("Vonage webhook body is not a JSON object", 400)
        text = {k: v for k, v in fields.items() if isinstance(v, str)}
        if hook == "voice":
            return await self._answer(request, text, router)
        return self._event(request, text, router)

    async def _answer(self, request: Request, fields: Mapping[str, str], router: CallRouter) -> Response:
        uuid = fields.get("uuid")
        if not uuid:
            return Response("Vonage answer webhook without uuid", 400)
        our_id = request.query_params.get("call_id") or None
        admission = router.admit(
            InboundCall(
                carrier=CARRIER,
                carrier_call_id=uuid,
                caller=fields.get("from", ""),
                callee=fields.get("to", ""),
                direction="outbound" if our_id is not None else "inbound",
                call_id=our_id,
            )
        )
        if admission is None:
            log.info("vonage_call_rejected", uuid=uuid)
            return JSONResponse(proto.refuse())
        self._call_ids.put(uuid, admission.call_id)
        await admission.wait_recorded()  # the NCCO answers the call: the record goes first
        path = MEDIA_PATH.replace("{call_id}", quote(admission.call_id, safe=""))
        query = {"token": media_token(self._media_secret, admission.call_id)}
        if admission.parameters.get(CALL_TOKEN):
            query[CALL_TOKEN] = admission.parameters[CALL_TOKEN]
        uri = self._ctx.public_url(f"{path}?{urlencode(query)}", websocket=True)
        headers = {"call_id": admission.call_id, proto.UUID_HEADER: uuid}
        return JSONResponse(proto.connect_websocket(uri, headers))

    def _event(self, request: Request, fields: Mapping[str, str], router: CallRouter) -> Response:
        uuid = fields.get("uuid", "")
        call_id = (
            request.query_params.get("call_id")
            or self._call_ids.get(uuid)
            or router.call_id_for(CARRIER, uuid)
        )
        raw = fields.get("status", "")
        if call_id is None:
            log.info("vonage_event_for_unknown_call", uuid=uuid, status=raw)
            return Response(status_code=204)
        if raw in MACHINE_STATUS:
            router.machine_detected(call_id, MACHINE_STATUS[raw])
        elif raw in CALL_STATUS:
            detail: dict[str, Any] = {"carrier_status": raw, "uuid": uuid}
            for key, name in (("duration", "duration_secs"), ("detail", "detail"), ("price", "price")):
                if fields.get(key):
                    detail[name] = fields[key]
            router.carrier_status(call_id, CALL_STATUS[raw], detail)
        else:  # started, disconnected, transfer, ...: the log only
            log.info("vonage_call_event", call_id=call_id, status=raw)
        return Response(status_code=204)

    # ---------------------------------------------------------------- media

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        """Refuse sockets without our token or for unexpected calls (1008); else run the media leg."""
        if not valid_media_token(self._media_secret, call_id, websocket.query_params.get("token")):
            router.count_rejection(CARRIER, "signature")
            log.warning("vonage_media_bad_token", call_id=call_id)
            await websocket.close(POLICY_VIOLATION)
            return
        refused = await router.admit_media(call_id, websocket.query_params.get(CALL_TOKEN))
        if refused is not None:
            router.count_rejection(CARRIER, refused)
            log.warning("vonage_media_refused", call_id=call_id, reason=refused)
            await websocket.close(POLICY_VIOLATION)
            return
        await websocket.accept()
        codec = proto.VonageCodec()
        frames = MediaSocket(websocket, CARRIER, router, self._ctx.media_idle_timeout_secs)
        first = await await_start(
            frames, codec, timeout_secs=self.options.stream_start_timeout_secs, start="websocket:connected"
        )
        if await refused_other_call(first, call_id, frames, websocket, router):
            return
        # 160 μ-law bytes → one 640-byte L16 message; marks pad the partial frame (Vonage takes whole frames).
        leg = MediaLeg(websocket, codec, frames, frame_bytes=160, pad_marks=True, first_events=[first])
        try:
            await router.run_media(call_id, leg)
        finally:
            await leg.close()

    # ---------------------------------------------------------------- REST

    async def dial(self, request: DialRequest) -> str:
        """POST /v1/calls; Vonage fetches our answer_url (carrying our call id) when the callee answers."""
        body: dict[str, Any] = {
            "to": [{"type": "phone", "number": request.to.lstrip("+")}],
            "from": {"type": "phone", "number": request.from_.lstrip("+")},
            "answer_url": [self._public("voice", call_id=request.call_id)],
            "answer_method": "POST",
            "event_url": [self._public("event", call_id=request.call_id)],
            "event_method": "POST",
        }
        if request.machine_detection:
            body["machine_detection"] = "continue"  # report human/machine on the event webhook
        uuid = await self.rest.create_call(body)
        self._call_ids.put(uuid, request.call_id)
        return uuid

    async def hangup(self, carrier_call_id: str) -> None:
        await self.rest.hangup(carrier_call_id)

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        """Replace the call's NCCO with a connect to `to` (ends our websocket leg)."""
        number = self._ctx.phone_number
        ncco = proto.connect_phone(to, number) if number else proto.connect_phone(to)
        if not number:
            ncco[0]["randomFromNumber"] = True  # Vonage needs a from: one of the application's numbers
        await self.rest.transfer(carrier_call_id, ncco)

    async def start_recording(self, carrier_call_id: str) -> None:
        raise ProviderError(
            "Vonage records through an NCCO record action, not a command on a live call", provider=CARRIER
        )

    async def check(self) -> None:
        """List one call: proves the base URL answers and the application JWT is accepted."""
        await self.rest.probe()


@asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[VonageCarrier]:
    """Load and check the private key, then one aiohttp session for the carrier's lifetime."""
    assert options.application_id is not None and options.private_key is not None
    try:
        pem = vonage_jwt.load_private_key(options.private_key.get_secret_value(), ctx.config_dir)
        vonage_jwt.check_private_key(pem)
    except (OSError, ValueError, vonage_jwt.VonageJwtUnavailable) as exc:
        raise ProviderError(f"Vonage private_key: {exc}", provider=CARRIER) from None
    timeout = aiohttp.ClientTimeout(total=options.timeout_secs)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        rest = VonageRest(
            session,
            options.base_url,
            options.application_id,
            pem,
            max_attempts=options.max_attempts,
            retry_backoff_secs=options.retry_backoff_secs,
        )
        yield VonageCarrier(options, ctx, rest, pem)


async def check(provider: VonageCarrier) -> None:
    """`patterd check --probe`: is the application JWT accepted?"""
    await provider.check()


SPEC = ProviderSpec(
    kind="carrier",
    name=CARRIER,
    options=Options,
    build=build,
    summary="Vonage Voice: JWT-signed webhooks, NCCO connect to a websocket (L16 16 kHz), REST calls",
    check=check,
    capabilities=Capabilities(
        streaming=True,
        needs_network=True,
        sample_rates=(16000,),
        notes="L16 16 kHz websocket; notify for marks, clear for barge-in",
    ),
    carrier=CarrierFacts(
        media_path=MEDIA_PATH,
        prices={"inbound_per_minute": 0.0045, "outbound_per_minute": 0.0139},  # US voice list prices
        title="Vonage",
    ),
)
