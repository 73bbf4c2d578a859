"""The JSON error body of every ops API failure: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "provider_error",
    503: "unavailable",
}


def error_response(status: int, message: str, code: str | None = None, **extra: object) -> JSONResponse:
    """A JSON error in the contract's shape."""
    body: dict[str, object] = {"code": code or CODES.get(status, "error"), "message": message}
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette HTTPExceptions (404, 405, ...) as JSON errors."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail or CODES.get(exc.status_code, "error"))
