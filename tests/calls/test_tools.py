"""Webhook tools against a real local aiohttp server: size cap, URL credentials, redirects, host allow-list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from patterd.calls.tools import ToolActions, ToolFailure, ToolSet, WebhookTool, run_tool
from patterd.http_session import SharedSession

SECRETS = ("hunter2", "sk-live-123", "tok-456")
CHUNK = b"x" * 65536


@dataclass
class Endpoint:
    """A local HTTP server with the answers a webhook tool may get; records who called what."""

    url: str = ""
    hits: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # (method, path, headers)
    big_bytes_sent: int = 0
    big_finished: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/ok", self._ok)
        app.router.add_post("/big", self._big)
        app.router.add_post("/fail", self._fail)
        app.router.add_post("/moved", self._moved)
        app.router.add_post("/elsewhere", self._elsewhere)
        app.router.add_route("*", "/loop", self._loop)  # a 302 turns the POST into a GET
        return app

    def _hit(self, request: web.Request) -> None:
        self.hits.append((request.method, request.path, dict(request.headers)))

    async def _ok(self, request: web.Request) -> web.Response:
        self._hit(request)
        got = await request.json() if request.method == "POST" else None
        return web.json_response({"status": "shipped", "got": got})

    async def _big(self, request: web.Request) -> web.StreamResponse:
        # 60 MB, streamed: what a misbehaving endpoint sends back.
        self._hit(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.content_length = 60 * 1024 * 1024
        await resp.prepare(request)
        try:
            for _ in range(60 * 16):
                await resp.write(CHUNK)
                self.big_bytes_sent += len(CHUNK)
            self.big_finished = True
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client stopped reading and closed: expected
        return resp

    async def _fail(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.Response(status=500, text="database on fire")

    async def _moved(self, request: web.Request) -> web.Response:
        self._hit(request)
        raise web.HTTPTemporaryRedirect(request.query.get("to", "/ok"))

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self._hit(request)
        return web.json_response({"elsewhere": True})

    async def _loop(self, request: web.Request) -> web.Response:
        self._hit(request)
        raise web.HTTPFound("/loop")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()
    runner = web.AppRunner(ep.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ep.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield ep
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def hook(url: str, **extra: Any) -> WebhookTool:
    return WebhookTool(name="lookup", description="", parameters={"type": "object"}, url=url, **extra)


async def call(tool: WebhookTool, http: aiohttp.ClientSession, **arguments: Any) -> str:
    async def never(_: str) -> None:
        raise AssertionError("not a call action")

    return await run_tool(
        ToolSet(webhooks=(tool,)), tool.name, arguments, ToolActions(end_call=never, transfer=never), http
    )


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


async def test_a_normal_answer_reaches_the_model(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    result = json.loads(await call(hook(endpoint.url + "/ok"), http, order="42"))
    assert result == {"status": "shipped", "got": {"order": "42"}}


async def test_a_60_mb_answer_is_cut_at_max_response_bytes(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    result = json.loads(await call(hook(endpoint.url + "/big", max_response_bytes=1000), http))
    assert result["truncated"] is True and "max_response_bytes (1000)" in result["note"]
    assert result["partial_body"] == "x" * 1000
    # The rest was never read: the connection was dropped long before 60 MB went through.
    assert not endpoint.big_finished


async def test_the_default_cap_is_64_kb(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    result = json.loads(await call(hook(endpoint.url + "/big"), http))
    assert len(result["partial_body"]) == 64 * 1024


async def test_credentials_in_the_url_never_reach_the_model(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    netloc = endpoint.url.removeprefix("http://")
    url = f"http://admin:hunter2@{netloc}/fail?api_key=sk-live-123&token=tok-456&region=eu"
    with pytest.raises(ToolFailure) as failed:
        await call(hook(url), http)
    message = str(failed.value)
    assert_no_secret(message)
    assert f"http://***@{netloc}/fail?api_key=***&token=***&region=eu answered HTTP 500" in message
    assert "database on fire" in message
    # The credentials were still used: userinfo as basic auth.
    assert endpoint.hits[-1][2]["Authorization"].startswith("Basic ")


async def test_credentials_stay_out_of_timeouts_and_connection_errors(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ToolFailure) as refused:
        await call(hook("http://u:hunter2@127.0.0.1:9/x?apikey=sk-live-123"), http)
    assert_no_secret(str(refused.value))
    assert "http://***@127.0.0.1:9/x?apikey=*** failed" in str(refused.value)


async def test_redirects_are_not_followed_by_default(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    with pytest.raises(
        ToolFailure, match=r"HTTP 307, a redirect to .*/elsewhere; redirects are not followed"
    ):
        await call(hook(endpoint.url + "/moved?to=/elsewhere"), http)
    assert [path for _, path, _ in endpoint.hits] == ["/moved"]


async def test_followed_redirects_keep_the_method_and_stay_on_allowed_hosts(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    tool = hook(
        endpoint.url + "/moved?to=/elsewhere",
        follow_redirects=True,
        allowed_hosts=("127.0.0.1",),
        headers={"Authorization": "Bearer tok-456"},
    )
    assert json.loads(await call(tool, http)) == {"elsewhere": True}
    assert [(m, p) for m, p, _ in endpoint.hits] == [("POST", "/moved"), ("POST", "/elsewhere")]
    # To a host not on the list: refused before any request goes there.
    port = endpoint.url.rsplit(":", 1)[1]
    away = replace(tool, url=f"{endpoint.url}/moved?to=http://localhost:{port}/elsewhere")
    with pytest.raises(ToolFailure, match=r"http://localhost:\d+/elsewhere is not on allowed_hosts"):
        await call(away, http)
    assert [p for _, p, _ in endpoint.hits].count("/elsewhere") == 1


async def test_the_tools_headers_never_follow_a_redirect_to_another_host(
    endpoint: Endpoint, http: aiohttp.ClientSession
) -> None:
    port = endpoint.url.rsplit(":", 1)[1]
    tool = hook(
        f"{endpoint.url}/moved?to=http://localhost:{port}/elsewhere",
        follow_redirects=True,
        headers={"Authorization": "Bearer tok-456", "X-Api-Key": "sk-live-123"},
    )
    assert json.loads(await call(tool, http)) == {"elsewhere": True}
    first, second = endpoint.hits
    assert first[2]["Authorization"] == "Bearer tok-456"
    assert "Authorization" not in second[2] and "X-Api-Key" not in second[2]


async def test_a_redirect_loop_ends(endpoint: Endpoint, http: aiohttp.ClientSession) -> None:
    with pytest.raises(ToolFailure, match="redirected more than 5 times"):
        await call(hook(endpoint.url + "/loop", follow_redirects=True), http)
    assert [m for m, _, _ in endpoint.hits] == ["POST"] + ["GET"] * 5


async def test_the_daemons_shared_session_opens_at_the_first_webhook_call(endpoint: Endpoint) -> None:
    # The daemon hands calls a SharedSession: aiohttp and its session come with the first request (issue 14).
    shared = SharedSession()
    assert not shared.opened

    async def never(_: str) -> None:
        raise AssertionError("not a call action")

    tools = ToolSet(webhooks=(hook(endpoint.url + "/ok"),))
    actions = ToolActions(end_call=never, transfer=never)
    for order in ("1", "2"):
        result = json.loads(await run_tool(tools, "lookup", {"order": order}, actions, shared))
        assert result == {"status": "shipped", "got": {"order": order}}
    session = shared.get()
    assert shared.opened and shared.get() is session  # one session for every call
    await shared.aclose()
    assert session.closed
    with pytest.raises(RuntimeError, match="closed"):
        shared.get()
