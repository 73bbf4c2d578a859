"""The ops API over a real socket: status, calls, create/hangup/transfer, SSE, OpenAPI, errors and the token rule."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from patterd.protocols.audio import silence_ulaw
from patterd.web.openapi import openapi_document
from tests.web.fake_runtime import Served, serve_runtime


async def get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.get(url, **kw) as resp:
        return resp.status, await resp.json()


async def post(session: aiohttp.ClientSession, url: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    async with session.post(url, json=body, **kw) as resp:
        return resp.status, await resp.json()


async def start_local_call(
    session: aiohttp.ClientSession, served: Served
) -> tuple[str, aiohttp.ClientWebSocketResponse]:
    """Start a softphone call and connect its media websocket (silence keeps the line open)."""
    status, body = await post(session, served.base_url + "/webhooks/local/voice", {})
    assert status == 201, body
    ws = await session.ws_connect(served.base_url.replace("http", "ws") + body["media_path"])
    await ws.send_str(json.dumps({"event": "start"}))
    await ws.send_str(
        json.dumps({"event": "media", "media": {"payload": base64.b64encode(silence_ulaw(20)).decode()}})
    )
    return body["call_id"], ws


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def test_status_agents_and_errors(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path) as served, aiohttp.ClientSession() as session:
        status, body = await get(session, served.base_url + "/api/v1/status")
        assert status == 200
        assert body["state"] == "serving" and body["config_digest"] and body["live_calls"] == []
        status, body = await get(session, served.base_url + "/api/v1/agents")
        assert [a["name"] for a in body["agents"]] == ["front-desk"]
        assert body["agents"][0]["mode"] == "pipeline" and body["agents"][0]["tools"] == ["end_call"]
        status, body = await get(session, served.base_url + "/api/v1/calls/nope")
        assert status == 404 and body["error"]["code"] == "not_found"
        status, body = await get(session, served.base_url + "/api/v1/nothing-here")
        assert status == 404 and "message" in body["error"]
        status, body = await get(session, served.base_url + "/api/v1/calls?limit=0")
        assert status == 422


async def test_create_call_validation(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path) as served, aiohttp.ClientSession() as session:
        status, body = await post(session, served.base_url + "/api/v1/calls", {"to": "555"})
        assert status == 422 and body["error"]["fields"][0]["path"] == "to"
        status, body = await post(
            session, served.base_url + "/api/v1/calls", {"to": "+15550001111", "bogus": 1}
        )
        assert status == 422 and "bogus" in body["error"]["message"]
        async with session.post(served.base_url + "/api/v1/calls", data=b"{not json") as resp:
            assert resp.status == 400
        # The softphone cannot dial out: a clear error, and the attempt is recorded as failed.
        status, body = await post(session, served.base_url + "/api/v1/calls", {"to": "+15550001111"})
        assert status == 422 and "cannot place outbound" in body["error"]["message"]


async def test_live_call_listing_detail_hangup_and_sse(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path) as served, aiohttp.ClientSession() as session:
        events = await session.get(served.base_url + "/api/v1/events")
        assert events.headers["content-type"].startswith("text/event-stream")
        call_id, ws = await start_local_call(session, served)

        async def started() -> bool:
            line = await events.content.readline()
            return line.startswith(b"event: call.started")

        await wait_for(started)

        async def listed() -> bool:
            _, body = await get(session, served.base_url + "/api/v1/calls")
            return any(c["call_id"] == call_id for c in body["calls"])

        await wait_for(listed)
        status, body = await get(session, served.base_url + f"/api/v1/calls/{call_id}")
        assert status == 200 and body["metadata"]["status"] == "in_progress"

        status, body = await post(
            session, served.base_url + f"/api/v1/calls/{call_id}/transfer", {"to": "+15550002222"}
        )
        assert status in (409, 502)  # the softphone cannot transfer
        status, body = await post(session, served.base_url + f"/api/v1/calls/{call_id}/hangup")
        assert status == 202

        async def ended() -> bool:
            _, body = await get(session, served.base_url + f"/api/v1/calls/{call_id}")
            return bool(body["metadata"]["status"] == "completed")

        await wait_for(ended)
        status, body = await post(session, served.base_url + f"/api/v1/calls/{call_id}/hangup")
        assert status == 409
        await ws.close()
        events.close()

        # Last-Event-ID replays what was missed.
        async with session.get(served.base_url + "/api/v1/events", headers={"Last-Event-ID": "0"}) as replay:
            first = b""
            async with asyncio.timeout(5):
                while not first.startswith(b"id: 1"):
                    first = await replay.content.readline()


async def test_openapi_matches_routes(tmp_path: Path) -> None:
    doc = openapi_document("x")
    async with serve_runtime(tmp_path) as served, aiohttp.ClientSession() as session:
        routes = {
            getattr(r, "path", "")
            for r in __import__("tests.web.fake_runtime", fromlist=["make_app"])
            .make_app(served.runtime)
            .routes
        }
        for path in doc["paths"]:
            assert path in routes, path
        for path in routes:
            if path.startswith("/api/") or path in ("/healthz", "/readyz", "/health", "/metrics"):
                assert path in doc["paths"], f"{path} is not in the OpenAPI document"
        for path, ops in doc["paths"].items():
            if "get" in ops and "{" not in path and path != "/api/v1/events":
                async with session.get(served.base_url + path) as resp:
                    assert resp.status not in (404, 405), path


@pytest.mark.parametrize("loopback", [True, False])
async def test_token_rule(tmp_path: Path, loopback: bool) -> None:
    async with (
        serve_runtime(tmp_path, token="tok-123", loopback=loopback) as served,
        aiohttp.ClientSession() as session,
    ):
        url = served.base_url + "/api/v1/status"
        async with session.get(url) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with session.get(url, headers={"Authorization": "Bearer tok-123"}) as resp:
            assert resp.status == 200
            assert "tok-123" not in await resp.text()
        async with session.get(served.base_url + "/metrics") as resp:
            assert resp.status == 401
        async with session.post(served.base_url + "/webhooks/local/voice", json={}) as resp:
            assert resp.status == 401  # the softphone follows the dashboard's rule


async def test_no_token_beyond_loopback_is_closed(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path, loopback=False) as served, aiohttp.ClientSession() as session:
        async with session.get(served.base_url + "/api/v1/status") as resp:
            assert resp.status == 401


async def test_reload_route(tmp_path: Path) -> None:
    from patterd.web.runtime import ReloadResult

    async with serve_runtime(tmp_path) as served, aiohttp.ClientSession() as session:
        status, body = await post(session, served.base_url + "/api/v1/reload")
        assert status == 200 and body["ok"] is True and served.runtime.reloads == ["api"]
        served.runtime.reload_result = ReloadResult(
            False, 1, issues=["agents (line 3): bad"], message="invalid"
        )
        status, body = await post(session, served.base_url + "/api/v1/reload")
        assert status == 422 and body["error"]["issues"] == ["agents (line 3): bad"]


async def test_browser_posts_need_the_csrf_header(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path, token="tok-123") as served, aiohttp.ClientSession() as session:
        cookie = {"Cookie": "patterd_session=tok-123"}
        url = served.base_url + "/api/v1/reload"
        async with session.post(url, headers=cookie) as resp:
            assert resp.status == 403  # a cookie rides along on a cross-site form post: refused
        async with session.post(url, headers={**cookie, "X-Patterd-CSRF": "1"}) as resp:
            assert resp.status == 200
        async with session.post(url, headers={"Authorization": "Bearer tok-123"}) as resp:
            assert resp.status == 200  # scripts with a bearer token are not browsers
        async with session.post(served.base_url + "/webhooks/local/voice", json={}, headers=cookie) as resp:
            assert resp.status == 403
        ws_url = served.base_url.replace("http", "ws") + "/ws/local/nope"
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(ws_url, headers={**cookie, "Origin": "https://evil.example"})
