"""GET /api/v1/calls/{call_id}/recording: the call's local recording (audio/wav), with HTTP range requests."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from patterd.store.recording_path import recording_file
from patterd.web.errors import error_response
from patterd.web.runtime import Runtime


def recording_routes(runtime: Runtime) -> list[BaseRoute]:
    """The recording route; the token rule applies to it like to every /api/ path (web.app)."""

    async def recording(request: Request) -> Response:
        """The stereo μ-law WAV beside the call's record; 404 when the call has none."""
        call_id = request.path_params["call_id"]
        path = recording_file(runtime.store, call_id)
        if path is None:
            return error_response(404, f"no recording of call {call_id!r}")
        # Starlette's FileResponse answers Range (206 + Content-Range, 416, Accept-Ranges: bytes). A live
        # call's file grows: each response serves what was on disk when it started.
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    return [Route("/api/v1/calls/{call_id}/recording", recording, methods=["GET", "HEAD"])]
