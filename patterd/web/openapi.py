"""The OpenAPI 3.1 document of the ops API; request schemas come from the pydantic body models."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}


def _op(
    summary: str,
    *,
    ok: str = "200",
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("401",),
    content_type: str = "application/json",
    open_: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {ok: {"description": "OK", "content": {content_type: {}}}},
    }
    if open_:  # the probes: no token, whatever the server's
        op["security"] = []
    else:  # a locked address (too many wrong tokens) gets 429 with Retry-After (web.throttle)
        errors = (*errors, "429")
    if body:  # web.limits: not JSON / too large / too slow
        errors = (*errors, "400", "408", "413")
    for code in sorted(set(errors)):
        op["responses"][code] = {"description": "Error", "content": {"application/json": {"schema": ERROR}}}
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}},
        }
    if params:
        op["parameters"] = params
    return op


def _q(name: str, description: str, type_: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": type_},
    }


CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _recording_op() -> dict[str, Any]:
    """The call's local recording: a stereo 8 kHz μ-law WAV, byte ranges served (206/416)."""
    op = _op(
        "The call's recording (stereo μ-law WAV: caller left, agent right); supports Range",
        params=[
            CALL_ID,
            {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        errors=("401", "404"),
        content_type="audio/wav",
    )
    op["responses"]["206"] = {"description": "Partial content (Range)", "content": {"audio/wav": {}}}
    op["responses"]["416"] = {"description": "Range not satisfiable"}
    return op


def openapi_document(version: str) -> dict[str, Any]:
    """The document; `tests/web/test_openapi.py` checks it against the app's routes."""
    from patterd.web.ops_api import CreateCall, TransferCall

    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "CreateCall": CreateCall.model_json_schema(
            by_alias=True, ref_template="#/components/schemas/{model}"
        ),
        "TransferCall": TransferCall.model_json_schema(ref_template="#/components/schemas/{model}"),
    }
    paths: dict[str, Any] = {
        "/healthz": {"get": _op("Process alive", errors=(), open_=True)},
        "/readyz": {"get": _op("Ready: 200 only while serving", errors=("503",), open_=True)},
        "/health": {"get": _op("Patter-compatible health", errors=(), open_=True)},
        "/metrics": {"get": _op("Prometheus metrics", content_type="text/plain")},
        "/api/v1/status": {"get": _op("State, version, uptime, config digest, live calls")},
        "/api/v1/calls": {
            "get": _op(
                "List calls, newest first",
                params=[
                    _q("status", "Filter by status"),
                    _q("agent", "Filter by agent name"),
                    _q("since", "Started at or after (ISO-8601)"),
                    _q("until", "Started before (ISO-8601)"),
                    _q("limit", "Page size (1-500, default 50)", "integer"),
                    _q("cursor", "Opaque cursor from next_cursor"),
                ],
                errors=("401", "422"),
            ),
            "post": _op(
                "Place an outbound call", ok="201", body="CreateCall", errors=("401", "422", "502", "503")
            ),
        },
        "/api/v1/calls/{call_id}": {
            "get": _op("Call metadata, transcript and events", params=[CALL_ID], errors=("401", "404"))
        },
        "/api/v1/calls/{call_id}/recording": {
            "get": _recording_op(),
        },
        "/api/v1/calls/{call_id}/hangup": {
            "post": _op("Hang up a live call", ok="202", params=[CALL_ID], errors=("401", "404", "409"))
        },
        "/api/v1/calls/{call_id}/transfer": {
            "post": _op(
                "Transfer a live call",
                ok="202",
                body="TransferCall",
                params=[CALL_ID],
                errors=("401", "404", "409", "422"),
            )
        },
        "/api/v1/events": {
            "get": _op("Live call events (Server-Sent Events)", content_type="text/event-stream")
        },
        "/api/v1/agents": {"get": _op("Agents of the running config")},
        "/api/v1/reload": {"post": _op("Reload the config from disk", errors=("401", "422"))},
        "/api/v1/openapi.json": {"get": _op("This document")},
        "/api/dashboard/ingest": {  # web/fleet_routes.py; body up to 1 MiB
            "post": _op(
                "Patter SDK call lifecycle JSON (its standalone dashboard's ingest)",
                errors=("400", "408", "413"),
            )
        },
        "/api/v1/fleet/events": {  # signed with the token (X-Patterd-Signature) instead of carrying it
            "post": _op("Call events of another patterd", errors=("400", "401", "408", "413"), open_=True)
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "patterd ops API", "version": version},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
