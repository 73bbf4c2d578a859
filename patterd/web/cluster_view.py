"""The ops API's view of a cluster: other replicas' live calls in the status, control of their calls."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from patterd.protocols import jsontext
from patterd.web.errors import error_response

if TYPE_CHECKING:
    from patterd.cluster.node import ClusterNode

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def cluster_of(runtime: object) -> ClusterNode | None:
    """The runtime's cluster node, when it is one replica of many (`cluster.redis`)."""
    node: ClusterNode | None = getattr(runtime, "cluster", None)
    return node


async def cluster_status(runtime: object) -> dict[str, Any]:
    """The status's `cluster` field of a replica (nothing without a cluster)."""
    node = cluster_of(runtime)
    return {} if node is None else {"cluster": await node.status()}


async def remote_live_calls(runtime: object) -> list[dict[str, Any]]:
    """The other replicas' live calls, each naming its replica (none without a cluster)."""
    node = cluster_of(runtime)
    return [] if node is None else await node.remote_calls()


async def control_remote(runtime: object, request: Request, call_id: str) -> Response | None:
    """Hang up or transfer a call live on another replica; None when no replica holds it."""
    node = cluster_of(runtime)
    if node is None:
        return None
    action = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    to: str | None = None
    if action == "transfer":
        try:
            body = jsontext.loads(await request.body())
        except jsontext.JSONError as exc:
            return error_response(400, f"the body is not JSON this API accepts: {exc}")
        raw = body.get("to") if isinstance(body, dict) else None
        if not isinstance(raw, str) or not _E164.match(raw):
            return error_response(422, "to: must be an E.164 number like +15550001234")
        to = raw
    result = await node.control(call_id, action, to)
    if result is None:
        return None
    code, body_out = result
    return JSONResponse(body_out, status_code=code)
