"""Routes of a central dashboard: `POST /api/v1/fleet/events` (signed, from other daemons) and `POST
/api/dashboard/ingest` (the Patter SDK's standalone-dashboard ingest, behind the token rule)."""

from __future__ import annotations

import time

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from patterd.clock import SYSTEM_CLOCK
from patterd.notify.patter_ingest import IngestError, Known, ingest
from patterd.notify.receiver import FleetReceiver, parse_batch
from patterd.notify.sender import FLEET_PATH
from patterd.notify.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, check_signature
from patterd.notify.wire import WireError, check_call_id
from patterd.protocols.events import CallEvent
from patterd.protocols.jsontext import JSONError, loads
from patterd.web.auth import client_address
from patterd.web.errors import error_response
from patterd.web.limits import is_loopback_address
from patterd.web.runtime import Runtime

log = structlog.get_logger("patterd.web.fleet")

INGEST_PATH = "/api/dashboard/ingest"


def fleet_routes(runtime: Runtime) -> list[Route]:
    """The two ingest routes of a central patterd (any patterd is one: a daemon without senders gets none)."""
    receiver = FleetReceiver(runtime.store, runtime.feed.observe)

    def apply(events: list[CallEvent]) -> None:
        for event in events:
            runtime.store.handle(event)
            runtime.feed.observe(event)

    async def fleet_events(request: Request) -> Response:
        body = await request.body()
        token = runtime.token
        if token:  # this path is open in the token middleware: the signature is its authentication
            problem = check_signature(
                token,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                body,
                time.time(),
            )
            if problem is not None:
                return error_response(401, problem)
        elif not is_loopback_address(client_address(request)):  # the token rule: no token, loopback only
            return error_response(
                401, "this daemon has no dashboard_token: only loopback senders are accepted"
            )
        try:
            source, events = parse_batch(loads(body))
        except (JSONError, WireError) as exc:
            return error_response(400, str(exc))
        applied = receiver.apply(source, events)
        return JSONResponse({"accepted": applied.accepted, "duplicates": applied.duplicates})

    async def patter_ingest(request: Request) -> Response:
        try:
            data = loads(await request.body())
        except JSONError:
            return JSONResponse({"ok": False, "error": "the body must be JSON"}, status_code=400)
        known = _known(runtime, data)
        try:
            ingested = ingest(data, known, SYSTEM_CLOCK.now())
        except IngestError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        apply(ingested.events)
        answer: dict[str, object] = {"ok": True, "call_id": ingested.call_id}
        if ingested.kind != "started":  # the SDK's own dashboard names the initiated and ended kinds
            answer["event"] = ingested.kind
        return JSONResponse(answer)

    return [
        Route(FLEET_PATH, fleet_events, methods=["POST"]),
        Route(INGEST_PATH, patter_ingest, methods=["POST"]),
    ]


def _known(runtime: Runtime, data: object) -> Known | None:
    """What this daemon has of the payload's call (a valid id only; `ingest` refuses the others)."""
    try:
        call_id = check_call_id(data.get("call_id") if isinstance(data, dict) else None)
    except WireError:
        return None
    meta = runtime.store.recent_metadata(call_id)
    if meta is None:
        record = runtime.store.get_call(call_id)  # one that ended before this process started
        meta = record["metadata"] if record is not None else None
    return Known(str(meta.get("status", ""))) if meta is not None else None
