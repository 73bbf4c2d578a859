"""web.limits over a real socket: body size per route (declared and streamed), body read timeout, per-client cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from patterd.web.limits import LOGIN_MAX_BYTES, WEBHOOK_MAX_BYTES, EdgeLimits, EdgeSettings, body_limit
from tests.serving import serve_app
from tests.web import rawhttp


@asynccontextmanager
async def edge_app(settings: EdgeSettings) -> AsyncIterator[tuple[str, list[int]]]:
    """A small app behind EdgeLimits: routes that read their whole body and say how long it was."""
    async with edge_app_arrivals(settings) as (base_url, handled, _):
        yield base_url, handled


@asynccontextmanager
async def edge_app_arrivals(
    settings: EdgeSettings,
) -> AsyncIterator[tuple[str, list[int], asyncio.Queue[None]]]:
    """`edge_app`, also telling each request's arrival at its handler (past the middleware's count)."""
    handled: list[int] = []
    arrived: asyncio.Queue[None] = asyncio.Queue()

    async def read_body(request: Request) -> Response:
        arrived.put_nowait(None)
        body = await request.body()
        handled.append(len(body))
        return JSONResponse({"bytes": len(body)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/webhooks/twilio/voice", read_body, methods=["POST"]),
            Route("/login", read_body, methods=["POST"]),
            Route("/api/v1/calls", read_body, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=[Middleware(EdgeLimits, settings=settings)],
    )
    async with serve_app(app) as base_url:
        yield base_url, handled, arrived


async def send_body(
    base_url: str, path: str, body: bytes, *, source: str | None = None
) -> rawhttp.RawResponse:
    reader, writer = await rawhttp.connect(base_url, source)
    try:
        writer.write(rawhttp.request_head("POST", path, content_length=len(body)) + body)
        await writer.drain()
        return await rawhttp.read_response(reader)
    finally:
        await rawhttp.close(writer)


def test_limits_per_route() -> None:
    assert body_limit("/login") == LOGIN_MAX_BYTES == 8192
    assert body_limit("/webhooks/telnyx/voice") == WEBHOOK_MAX_BYTES == 65536
    assert body_limit("/api/v1/calls") == 65536
    assert body_limit("/") == 8192


async def test_declared_too_large_is_refused_before_reading() -> None:
    async with edge_app(EdgeSettings()) as (base_url, handled):
        reader, writer = await rawhttp.connect(base_url)
        try:  # the head alone: the answer must come without one body byte sent
            writer.write(rawhttp.request_head("POST", "/login", content_length=LOGIN_MAX_BYTES + 1))
            await writer.drain()
            response = await rawhttp.read_response(reader)
            assert response.status == 413
            assert response.headers["connection"] == "close"
            assert json.loads(response.body)["error"]["code"] == "payload_too_large"
            assert await reader.read() == b""  # the server closed the connection
        finally:
            await rawhttp.close(writer)
        ok = await send_body(base_url, "/login", b"t" * LOGIN_MAX_BYTES)
        assert ok.status == 200 and json.loads(ok.body) == {"bytes": LOGIN_MAX_BYTES}
        assert handled == [LOGIN_MAX_BYTES]


async def test_streamed_too_large_is_refused_while_it_streams() -> None:
    async with edge_app(EdgeSettings()) as (base_url, handled):
        response, sent = await rawhttp.upload_until_answered(
            base_url, "/webhooks/twilio/voice", 200 * 1024 * 1024, chunk=16 * 1024
        )
        assert response is not None and response.status == 413
        # The answer came after about the limit, not after 200 MB (socket buffers hold a little more).
        assert sent < 8 * 1024 * 1024, sent
        assert handled == []


async def test_slow_body_times_out_with_408() -> None:
    async with edge_app(EdgeSettings(read_timeout_secs=0.3)) as (base_url, handled):
        reader, writer = await rawhttp.connect(base_url)
        try:
            writer.write(rawhttp.request_head("POST", "/webhooks/twilio/voice", content_length=100) + b"abc")
            await writer.drain()
            response = await asyncio.wait_for(rawhttp.read_response(reader), 10)
            assert response.status == 408
            assert json.loads(response.body)["error"]["code"] == "request_timeout"
        finally:
            await rawhttp.close(writer)
        assert handled == []


async def test_requests_in_flight_are_capped_per_client_address() -> None:
    settings = EdgeSettings(max_requests_per_client=3, exempt_loopback=False)
    async with edge_app_arrivals(settings) as (base_url, _handled, arrived):
        held = []
        for _ in range(3):  # three unfinished bodies from 127.0.0.2 hold its three slots
            reader, writer = await rawhttp.connect(base_url, "127.0.0.2")
            writer.write(rawhttp.request_head("POST", "/api/v1/calls", content_length=10) + b"{")
            await writer.drain()
            held.append((reader, writer))
        try:
            async with asyncio.timeout(10):
                for _ in range(3):
                    await arrived.get()
            refused = await send_body(base_url, "/api/v1/calls", b"{}", source="127.0.0.2")
            assert refused.status == 429 and refused.headers["retry-after"] == "1"
            other = await send_body(base_url, "/api/v1/calls", b"{}", source="127.0.0.3")
            assert other.status == 200  # another address is not affected
            reader, writer = await rawhttp.connect(base_url, "127.0.0.2")
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # probes are never capped
            assert (await rawhttp.read_response(reader)).status == 200
            await rawhttp.close(writer)
        finally:
            for reader, writer in held:
                writer.write(b"}" * 9)  # finish them: the slots come back
                await writer.drain()
                assert (await rawhttp.read_response(reader)).status == 200
                await rawhttp.close(writer)
        again = await send_body(base_url, "/api/v1/calls", b"{}", source="127.0.0.2")
        assert again.status == 200


async def test_loopback_is_not_capped_by_default() -> None:
    async with edge_app_arrivals(EdgeSettings(max_requests_per_client=1)) as (base_url, _handled, arrived):
        _reader, writer = await rawhttp.connect(base_url, "127.0.0.2")
        writer.write(rawhttp.request_head("POST", "/api/v1/calls", content_length=2) + b"{")
        await writer.drain()
        try:
            await asyncio.wait_for(arrived.get(), 10)
            second = await send_body(base_url, "/api/v1/calls", b"{}", source="127.0.0.2")
            assert second.status == 200  # a tunnel or proxy on this host carries many clients at once
        finally:
            await rawhttp.close(writer)
