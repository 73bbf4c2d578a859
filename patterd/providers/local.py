"""`carrier.local`: the built-in browser softphone (and in-process callers for `patterd simulate`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from patterd.errors import CallError
from patterd.protocols import jsontext
from patterd.protocols import local as codec
from patterd.providers.kinds import CALL_TOKEN, CallRouter, DialRequest, InboundCall
from patterd.providers.media_leg import MediaLeg
from patterd.providers.media_socket import MediaSocket
from patterd.providers.spec import BuildContext, Capabilities, CarrierFacts, ProviderOptions, ProviderSpec

log = structlog.get_logger("patterd.local")

SOFTPHONE_NUMBER = "+10000000000"  # what the softphone "dials from": not a real number


class LocalOptions(ProviderOptions):
    """The softphone has no options; it exists so the dashboard can place calls."""


class SoftphoneLeg(MediaLeg):
    """The browser phone's media stream: the one media leg, plus transcript lines shown on the page and
    the page's receiver reports (what the caller heard of each turn)."""

    def __init__(self, websocket: WebSocket, wire: codec.SoftphoneCodec, frames: MediaSocket) -> None:
        # the browser buffers and paces what it gets: audio goes out in the chunks the session sends
        super().__init__(websocket, wire, frames, frame_bytes=0, end_reason="browser disconnected")
        self.wire = wire

    async def announce_turn(self, turn: int, frame: int, latency_ms: float) -> None:
        """Right before `turn`'s first agent audio: tell the page which of its frames ended the caller's
        turn (caller frame number `frame`), so it reports what it heard (a `heard` frame, then CallerHeard)."""
        message = self.wire.turn(turn, frame, latency_ms)
        if message is not None:  # a page that numbers no frames is not asked
            await self._send(message)

    async def send_transcript(self, role: str, text: str, *, partial: bool = False) -> None:
        """Show a transcript line (or the agent's words so far, `partial`) beside the call on the page."""
        await self._send(codec.transcript_message(role, text, partial=partial))


def _token_query(parameters: Mapping[str, str]) -> str:
    """`?call_token=...` for the media path when the answer carries one."""
    token = parameters.get(CALL_TOKEN)
    return "?" + urlencode({CALL_TOKEN: token}) if token else ""


def _bad_request(message: str) -> Response:
    return JSONResponse({"error": {"code": "bad_request", "message": message}}, 400)


class LocalCarrier:
    """The softphone carrier: `POST /webhooks/local/voice` starts a call, `WS /ws/local/{id}` carries it."""

    name = "local"
    can_transfer = False  # the dashboard hides Transfer for its calls
    records_calls = False  # no carrier-side recording: `recording: local` records softphone calls

    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx

    async def handle_webhook(self, request: Request, hook: str, router: CallRouter) -> Response:
        if hook != "voice":
            return JSONResponse({"error": {"code": "not_found", "message": f"no local hook {hook!r}"}}, 404)
        raw = await request.body()
        try:
            body: Any = jsontext.loads(raw) if raw.strip() else {}
        except jsontext.JSONError as exc:
            return _bad_request(f"the body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _bad_request('the body must be a JSON object like {} or {"to": "+15550001234"}')
        to = body.get("to") or self.ctx.phone_number or ""
        if not isinstance(to, str):
            return _bad_request(f"`to` must be a string, not {type(to).__name__}")
        admission = router.admit(
            InboundCall(carrier="local", carrier_call_id="", caller=SOFTPHONE_NUMBER, callee=to)
        )
        if admission is None:
            return JSONResponse(
                {
                    "error": {
                        "code": "unavailable",
                        "message": "not taking new calls (draining, or at server.max_calls)",
                    }
                },
                503,
            )
        await admission.wait_recorded()  # the 201 answers the call: its record is on disk first
        return JSONResponse(
            {
                "call_id": admission.call_id,
                "agent": admission.agent,
                "media_path": f"/ws/local/{admission.call_id}" + _token_query(admission.parameters),
            },
            status_code=201,
        )

    async def handle_media(self, websocket: WebSocket, call_id: str, router: CallRouter) -> None:
        # the call token (in the media path we answered with) lets any replica of a cluster take the call
        refused = await router.admit_media(call_id, websocket.query_params.get(CALL_TOKEN))
        if refused is not None:
            router.count_rejection("local", refused)
            await websocket.close(code=1008)
            return
        await websocket.accept()
        frames = MediaSocket(websocket, "local", router, self.ctx.media_idle_timeout_secs)
        leg = SoftphoneLeg(websocket, codec.SoftphoneCodec(), frames)
        try:
            await router.run_media(call_id, leg)
        finally:
            await leg.close()

    async def dial(self, request: DialRequest) -> str:
        raise CallError("the local softphone cannot place outbound calls; configure twilio or telnyx")

    async def hangup(self, carrier_call_id: str) -> None:
        return None  # the session closes the websocket itself

    async def transfer(self, carrier_call_id: str, to: str) -> None:
        raise CallError("the local softphone cannot transfer calls")

    async def start_recording(self, carrier_call_id: str) -> None:
        raise CallError("the local softphone does not record calls")


@contextlib.asynccontextmanager
async def build(options: LocalOptions, ctx: BuildContext) -> AsyncIterator[LocalCarrier]:
    yield LocalCarrier(ctx)


SPEC = ProviderSpec(
    kind="carrier",
    name="local",
    options=LocalOptions,
    build=build,
    summary="Built-in browser softphone on the dashboard (no phone network)",
    capabilities=Capabilities(needs_network=False, sample_rates=(8000,)),
    carrier=CarrierFacts(
        media_path="/ws/local/{call_id}",
        needs_number=False,
        per_minute=False,
        access="dashboard",
        public_callbacks=False,
        default=True,
        title="Softphone",
    ),
)
