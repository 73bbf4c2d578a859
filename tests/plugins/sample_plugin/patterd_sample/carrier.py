"""`carrier.sample`: a tiny but real third-party carrier on patterd's carrier seam (wire: `patterd_sample.wire`).

It uses only what any plugin may use: its ProviderSpec with CarrierFacts (routes, number, billing), the
CallRouter it is handed, the shared MediaLeg/MediaSocket and patterd's media token helpers.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import Field, SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from patterd.errors import ProviderAuthError, ProviderConnectionError
from patterd.protocols.jsontext import JSONError, loads
from patterd.protocols.media_token import media_token, valid_media_token
from patterd.providers.kinds import CALL_TOKEN, CallRouter, DialRequest, InboundCall
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from patterd.providers.spec import (
    BuildContext,
    Capabilities,
    CarrierFacts,
    ProviderOptions,
    ProviderSpec,
    env_secret,
)

from . import wire

CARRIER = "sample"
MEDIA_PATH = "/ws/sample/{call_id}"
POLICY_VIOLATION = 1008
STATUS = {"ringing": "ringing", "answered": "in_progress", "completed": "completed", "busy": "busy"}


class Options(ProviderOptions):
    """`carrier: {type: sample, api_key: ..., signing_secret: ..., base_url: ...}`."""

    api_key: SecretStr | None = Field(default_factory=env_secret("SAMPLE_API_KEY"))
    signing_secret: SecretStr | None = Field(default_factory=env_secret("SAMPLE_SIGNING_SECRET"))
    base_url: str = "https://api.sample-carrier.invalid"
    timeout_secs: float = Field(default=5.0, gt=0)


class SampleCarrier:
    """`kinds.Carrier` for the sample wire."""

    name = CARRIER

    def __init__(self, options: Options, ctx: BuildContext, session: aiohttp.ClientSession) -> None:
        assert options.api_key is not None and options.signing_secret is not None
        self.options = options
        self._ctx = ctx
        self._session = session
        self._secret = options.signing_secret.get_secret_value()

    # ---------------------------------------------------------------- webhooks

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        body = await request.body()
        headers = request.headers
        if not wire.verify(
            self._secret,
            headers.get(wire.TIMESTAMP_HEADER),
            headers.get(wire.SIGNATURE_HEADER),
            body,
            time.time(),
        ):
            router.count_rejection(CARRIER, "signature")
            return Response(f"invalid {wire.SIGNATURE_HEADER}", 403)
        try:
            fields = loads(body.decode("utf-8", "replace"))
        except JSONError:
            return Response("a sample webhook is a JSON object", 400)
        if not isinstance(fields, dict) or not isinstance(fields.get("call"), str):
            return Response("a sample webhook names its call", 400)
        if hook == "voice":
            return await self._voice(fields, router)
        if hook == "status":
            call_id = fields.get("call_id") or router.call_id_for(CARRIER, fields["call"])
            if isinstance(call_id, str):
                raw = str(fields.get("status", ""))
                router.carrier_status(call_id, STATUS.get(raw, raw), {"carrier_status": raw})
            return Response(status_code=204)
        return Response(f"unknown sample webhook {hook!r}", 404)

    async def _voice(self, fields: dict[str, Any], router: CallRouter) -> Response:
        our_id = fields.get("call_id") if isinstance(fields.get("call_id"), str) else None
        admission = router.admit(
            InboundCall(
                carrier=CARRIER,
                carrier_call_id=fields["call"],
                caller=str(fields.get("from", "")),
                callee=str(fields.get("to", "")),
                direction="outbound" if our_id else "inbound",
                call_id=our_id,
            )
        )
        if admission is None:
            return JSONResponse({"action": "reject"})
        await admission.wait_recorded()  # the answer connects the call: the record goes first
        query = {"token": media_token(self._secret, admission.call_id)}
        if admission.parameters.get(CALL_TOKEN):
            query[CALL_TOKEN] = admission.parameters[CALL_TOKEN]
        path = MEDIA_PATH.replace("{call_id}", quote(admission.call_id, safe=""))
        url = self._ctx.public_url(f"{path}?{urlencode(query)}", websocket=True)
        return JSONResponse({"action": "stream", "url": url, "call_id": admission.call_id})

    # ---------------------------------------------------------------- media

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        if not valid_media_token(self._secret, call_id, websocket.query_params.get("token")):
            router.count_rejection(CARRIER, "signature")
            await websocket.close(POLICY_VIOLATION)
            return
        refused = await router.admit_media(call_id, websocket.query_params.get(CALL_TOKEN))
        if refused is not None:
            router.count_rejection(CARRIER, refused)
            await websocket.close(POLICY_VIOLATION)
            return
        await websocket.accept()
        frames = MediaSocket(websocket, CARRIER, router, self._ctx.media_idle_timeout_secs)
        leg = MediaLeg(websocket, wire.SampleCodec(), frames)
        try:
            await router.run_media(call_id, leg)
        finally:
            await leg.close()

    # ---------------------------------------------------------------- REST

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.options.base_url.rstrip("/") + path
        try:
            async with self._session.post(url, json=body) as resp:
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderConnectionError(provider=CARRIER, message=f"{path}: {exc}", retryable=True) from exc
        if resp.status in (401, 403):
            raise ProviderAuthError(
                provider=CARRIER, message=f"{path}: HTTP {resp.status}; check SAMPLE_API_KEY"
            )
        if resp.status >= 300:
            raise ProviderConnectionError(
                provider=CARRIER, message=f"{path}: HTTP {resp.status} {text[:200]}", retryable=True
            )
        with contextlib.suppress(JSONError):
            answer = loads(text) if text else {}
            return answer if isinstance(answer, dict) else {}
        return {}

    async def dial(self, request: DialRequest) -> str:
        answer_url = self._ctx.public_url(f"/webhooks/{CARRIER}/voice")
        body = {"to": request.to, "from": request.from_, "answer_url": answer_url, "call_id": request.call_id}
        answer = await self._post("/v1/calls", body)
        if not isinstance(answer.get("id"), str):
            raise ProviderConnectionError(
                provider=CARRIER, message=f"the call was not created: {json.dumps(answer)[:200]}"
            )
        return str(answer["id"])

    async def hangup(self, carrier_call_id: str) -> None:
        await self._post(f"/v1/calls/{quote(carrier_call_id, safe='')}/hangup", {})

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        await self._post(f"/v1/calls/{quote(carrier_call_id, safe='')}/transfer", {"to": to})

    async def start_recording(self, carrier_call_id: str) -> None:
        raise ProviderConnectionError(
            provider=CARRIER, message="the sample carrier does not record calls", retryable=False
        )


@contextlib.asynccontextmanager
async def build(options: Options, ctx: BuildContext) -> AsyncIterator[SampleCarrier]:
    if options.api_key is None or options.signing_secret is None:
        raise ProviderAuthError(
            provider=CARRIER, message="the sample carrier needs api_key and signing_secret"
        )
    headers = {"Authorization": f"Bearer {options.api_key.get_secret_value()}"}
    timeout = aiohttp.ClientTimeout(total=options.timeout_secs)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        yield SampleCarrier(options, ctx, session)


SPEC = ProviderSpec(
    kind="carrier",
    name=CARRIER,
    options=Options,
    build=build,
    summary="Sample carrier (plugin tests): HMAC-signed JSON webhooks, JSON media socket",
    capabilities=Capabilities(sample_rates=(8000,), notes="μ-law 8 kHz in JSON text frames"),
    carrier=CarrierFacts(
        media_path=MEDIA_PATH, prices={"inbound_per_minute": 0.004, "outbound_per_minute": 0.008}
    ),
)
