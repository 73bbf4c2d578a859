"""The JSON ops API under /api/v1: status, calls, live events, agents, reload, OpenAPI."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from patterd.calls.agent import agent_runtime
from patterd.clock import iso_ms
from patterd.errors import CallError, PatterdError
from patterd.protocols import jsontext
from patterd.web.cluster_view import cluster_status, control_remote, remote_live_calls
from patterd.web.errors import error_response
from patterd.web.openapi import openapi_document
from patterd.web.runtime import Runtime
from patterd.web.workers_view import PeerView, forward_to_peers, workers_status

E164 = r"^\+[1-9]\d{1,14}$"
HEARTBEAT_SECS = 15.0
Body = TypeVar("Body", bound=BaseModel)


class CreateCall(BaseModel):
    """POST /api/v1/calls body."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(pattern=E164, description="E.164 number to call")
    agent: str | None = None
    from_: str | None = Field(default=None, alias="from", pattern=E164)
    variables: dict[str, str] = Field(default_factory=dict)
    machine_detection: bool = False
    voicemail_message: str | None = None


class TransferCall(BaseModel):
    """POST /api/v1/calls/{id}/transfer body."""

    model_config = ConfigDict(extra="forbid")
    to: str = Field(pattern=E164)


async def parse_body(request: Request, model: type[Body]) -> Body | Response:
    """Validate a JSON body; a bad body is a 422 naming each field path."""
    try:
        raw = jsontext.loads(await request.body())
    except jsontext.JSONError as exc:
        return error_response(400, f"the body is not JSON this API accepts: {exc}")
    if not isinstance(raw, dict):
        return error_response(400, f"the body must be a JSON object, not {_json_kind(raw)}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = [
            {"path": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
        return error_response(422, summary, fields=fields)


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{name} must be an ISO-8601 time, got {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ops_routes(runtime: Runtime, peers: PeerView | None = None) -> list[BaseRoute]:
    """Every /api/v1 route (`peers`: the sibling workers under a supervisor)."""

    async def status(request: Request) -> Response:
        """Daemon state, version, uptime, config digest, live calls."""
        board = runtime.switchboard
        return await workers_status(
            peers,
            request,
            {
                "state": runtime.state,
                "version": runtime.version,
                "started_at": iso_ms(runtime.started_at),
                "uptime_secs": round((datetime.now(UTC) - runtime.started_at).total_seconds(), 3),
                "config_digest": runtime.config_digest,
                "config_generation": board.graph.generation,
                "carrier": board.graph.config.carrier.type,
                "public_host": runtime.public_host,
                "live_calls": [s.snapshot().as_dict() for s in board.calls.values()]
                + await remote_live_calls(runtime),  # other replicas' (cluster.redis), each with its replica
                # Store queries leave the loop: with persist: postgresql:// each is a round trip.
                "store": await asyncio.to_thread(runtime.store.stats),
                "history": runtime.store.history(),  # {"loading", "loaded", "total"}: hydrate progress
                **(await cluster_status(runtime)),  # with cluster.redis: this replica's name, Redis health
            },
        )

    async def list_calls(request: Request) -> Response:
        """Calls, newest first, filtered, with cursor pagination."""
        q = request.query_params
        try:
            limit = int(q.get("limit", "50"))
            if not 1 <= limit <= 500:
                raise ValueError("limit must be between 1 and 500")
            since = _parse_time(q.get("since"), "since")
            until = _parse_time(q.get("until"), "until")
        except ValueError as exc:
            return error_response(422, str(exc))
        try:
            items, cursor = await asyncio.to_thread(
                runtime.store.list_calls,
                status=q.get("status") or None,
                agent=q.get("agent") or None,
                since=since,
                until=until,
                limit=limit,
                cursor=q.get("cursor") or None,
            )
        except ValueError as exc:
            return error_response(422, str(exc))
        # While the history is still loading (start-up), a listing may miss older calls: say so.
        return JSONResponse({"calls": items, "next_cursor": cursor, "history": runtime.store.history()})

    async def create_call(request: Request) -> Response:
        """Place an outbound call."""
        body = await parse_body(request, CreateCall)
        if isinstance(body, Response):
            return body
        try:
            call_id = await runtime.switchboard.place_call(
                body.to,
                agent=body.agent,
                from_=body.from_,
                variables=body.variables,
                machine_detection=body.machine_detection,
                voicemail_message=body.voicemail_message,
            )
        except CallError as exc:
            code = 503 if runtime.switchboard.draining or runtime.switchboard.at_capacity else 422
            return error_response(code, str(exc))
        except PatterdError as exc:
            return error_response(502, f"the carrier refused the call: {exc}")
        return JSONResponse({"call_id": call_id, "status": "ringing"}, status_code=201)

    async def get_call(request: Request) -> Response:
        """One call: metadata, transcript, events."""
        call_id = request.path_params["call_id"]
        record = await asyncio.to_thread(runtime.store.get_call, call_id)
        if record is None:
            return error_response(404, f"no call {call_id!r}")
        return JSONResponse(record)

    def _call_action(
        action: Callable[[str, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            call_id = request.path_params["call_id"]
            if call_id not in runtime.switchboard.calls:
                forwarded = await forward_to_peers(peers, request)  # another worker's call
                if forwarded is not None:
                    return forwarded
                remote = await control_remote(runtime, request, call_id)  # another replica's call
                if remote is not None:
                    return remote
                if runtime.store.get_call(call_id) is not None:
                    return error_response(409, f"call {call_id!r} is not live")
                return error_response(404, f"no call {call_id!r}")
            try:
                return await action(call_id, request)
            except CallError as exc:
                return error_response(409, str(exc))
            except PatterdError as exc:
                return error_response(502, str(exc))

        return handler

    async def _hangup(call_id: str, request: Request) -> Response:
        await runtime.switchboard.hangup(call_id)
        return JSONResponse({"call_id": call_id, "status": "ending"}, status_code=202)

    async def _transfer(call_id: str, request: Request) -> Response:
        body = await parse_body(request, TransferCall)
        if isinstance(body, Response):
            return body
        await runtime.switchboard.transfer(call_id, body.to)
        return JSONResponse({"call_id": call_id, "status": "transferring", "to": body.to}, status_code=202)

    async def events(request: Request) -> Response:
        """Server-Sent Events: call started/updated/ended and transcript lines, live."""
        header = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        # ASCII digits only, and not absurdly many: "²" is a digit to str.isdigit() but not to int().
        last_id = (
            int(header) if header and len(header) <= 20 and header.isascii() and header.isdigit() else None
        )

        async def stream() -> AsyncIterator[str]:
            # A client going away cancels this generator wherever it waits; that is the normal end of
            # a feed, so nothing here may turn it into an error (aclosing ends the subscription quietly).
            yield "retry: 2000\n\n"
            async with contextlib.aclosing(
                runtime.feed.subscribe(last_id, idle_secs=HEARTBEAT_SECS)
            ) as items:
                async for item in items:
                    yield f": heartbeat {int(time.time())}\n\n" if item is None else item.encode()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def agents(request: Request) -> Response:
        """The agents of the running config."""
        graph = runtime.switchboard.graph
        out: list[dict[str, Any]] = []
        for name in graph.agents:
            agent = agent_runtime(graph, name)
            cfg = agent.config
            item: dict[str, Any] = {
                "name": agent.name,
                "phone_number": cfg.phone_number,
                "mode": agent.provider_mode,
                "provider": agent.provider_name,
                "tools": [t.name for t in agent.toolset.schemas()],
                "first_message": cfg.first_message,
            }
            for role in ("engine", "stt", "llm", "tts", "vad"):
                section = getattr(cfg, role)
                if section is not None:
                    item[role] = section.type
            out.append(item)
        return JSONResponse({"agents": out, "config_generation": graph.generation})

    async def reload(request: Request) -> Response:
        """Reload the config from disk; on error the old config keeps serving."""
        result = await runtime.reload("api")
        body = {
            "ok": result.ok,
            "generation": result.generation,
            "message": result.message,
            "issues": result.issues,
        }
        if result.ok:
            return JSONResponse(body)
        return error_response(422, result.message or "the new config is invalid", issues=result.issues)

    async def openapi(request: Request) -> Response:
        """This API's OpenAPI document."""
        return JSONResponse(openapi_document(runtime.version))

    return [
        Route("/api/v1/status", status, methods=["GET"]),
        Route("/api/v1/calls", list_calls, methods=["GET"]),
        Route("/api/v1/calls", create_call, methods=["POST"]),
        Route("/api/v1/calls/{call_id}", get_call, methods=["GET"]),
        Route("/api/v1/calls/{call_id}/hangup", _call_action(_hangup), methods=["POST"]),
        Route("/api/v1/calls/{call_id}/transfer", _call_action(_transfer), methods=["POST"]),
        Route("/api/v1/events", events, methods=["GET"]),
        Route("/api/v1/agents", agents, methods=["GET"]),
        Route("/api/v1/reload", reload, methods=["POST"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    ]
