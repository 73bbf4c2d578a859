"""`server.workers`: the status of every worker and call control reaching the worker that holds a call."""

from __future__ import annotations

import os
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from patterd.web.errors import error_response
from patterd.web.runtime import Runtime

PEER_SCOPE = "worker"  # `?scope=worker`: answer for this worker only (what siblings ask each other)


class PeerView(Protocol):
    """The sibling workers of this process (patterd.workers.peers.Peers)."""

    worker: int

    async def statuses(self) -> list[dict[str, Any]]:
        """Every sibling's own status; an unreachable one as `{"worker": N, "error": …}`."""
        ...

    async def forward(self, method: str, target: str, body: bytes | None) -> tuple[int, Any] | None:
        """A call-control request sent to the siblings: the first 2xx answer, or None."""
        ...


def _own_scope(request: Request) -> bool:
    return request.query_params.get("scope") == PEER_SCOPE


async def workers_status(peers: PeerView | None, request: Request, body: dict[str, Any]) -> Response:
    """The status answer: this process's, and under a supervisor every worker's live calls too."""
    if peers is None:
        return JSONResponse(body)
    for call in body["live_calls"]:
        call["worker"] = peers.worker
    own = {
        "worker": peers.worker,
        "pid": os.getpid(),
        "state": body["state"],
        "config_generation": body["config_generation"],
        "live_calls": len(body["live_calls"]),
    }
    body["worker"] = own
    if _own_scope(request):
        return JSONResponse(body)
    workers = [own]
    for sibling in await peers.statuses():
        if "error" in sibling or not isinstance(sibling.get("worker"), dict):
            workers.append({"worker": sibling.get("worker"), "error": sibling.get("error", "bad answer")})
            continue
        workers.append(sibling["worker"])
        calls = sibling.get("live_calls")
        if isinstance(calls, list):
            body["live_calls"].extend(c for c in calls if isinstance(c, dict))
    body["workers"] = sorted(workers, key=lambda w: w["worker"] if isinstance(w["worker"], int) else 0)
    return JSONResponse(body)


async def forward_to_peers(peers: PeerView | None, request: Request) -> Response | None:
    """A call action for a call this worker does not hold, done by the sibling that holds it; else None."""
    if peers is None or _own_scope(request):
        return None
    answer = await peers.forward(request.method, request.url.path, await request.body())
    if answer is None:
        return None
    status, body = answer
    return JSONResponse(body, status_code=status)


def handover_routes(runtime: Runtime, peers: PeerView | None) -> list[BaseRoute]:
    """`POST /api/v1/calls/{id}/handover` between workers: a sibling took this ringing call's media.

    Answered only on a worker's private socket (no client address: a unix socket in the supervisor's
    0700 run directory), never on the shared port.
    """
    if peers is None:
        return []

    async def handover(request: Request) -> Response:
        if request.client is not None:
            return error_response(404, "not found")
        handed = runtime.switchboard.hand_over(request.path_params["call_id"])
        return JSONResponse({"handed_over": handed})

    return [Route("/api/v1/calls/{call_id}/handover", handover, methods=["POST"])]
