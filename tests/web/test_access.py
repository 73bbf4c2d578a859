"""Who may use what, over a real socket: open probes, wrong-token throttling per address, `dashboard: false`."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from tests.web.fake_runtime import serve_runtime

TOKEN = "tok-123"


@pytest.fixture(autouse=True)
def long_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first lock of 60 s instead of 1 s: a slow, shared test machine must not outlast it mid-test."""
    monkeypatch.setattr("patterd.web.throttle.FIRST_LOCK_SECS", 60.0)


def session_from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from `address` (any 127.x.y.z on Linux loopback)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_probes_are_open_with_a_token_and_metrics_is_not(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path, token=TOKEN, loopback=False) as served, aiohttp.ClientSession() as s:
        for path in ("/healthz", "/readyz", "/health"):
            async with s.get(served.base_url + path) as resp:
                assert resp.status == 200, path
        async with s.get(served.base_url + "/metrics") as resp:
            assert resp.status == 401
        async with s.get(served.base_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
        async with s.get(
            served.base_url + "/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            paths = (await resp.json())["paths"]
        for path in ("/healthz", "/readyz", "/health"):  # the document says so too
            assert paths[path]["get"]["security"] == [] and "401" not in paths[path]["get"]["responses"]
        assert {"401", "429", "400", "413"} <= set(paths["/api/v1/calls"]["post"]["responses"])


async def test_wrong_logins_are_throttled_per_address(tmp_path: Path) -> None:
    form_headers = {"X-Patterd-CSRF": "1", "Content-Type": "application/x-www-form-urlencoded"}
    async with serve_runtime(tmp_path, token=TOKEN) as served, session_from("127.0.0.2") as guesser:
        url = served.base_url + "/login"
        statuses = []
        started = time.monotonic()
        for n in range(30):
            async with guesser.post(url, data=f"token=guess-{n}&next=/", headers=form_headers) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    retry_after = int(resp.headers["Retry-After"])
                    assert "Too many wrong tokens" in await resp.text()
        elapsed = time.monotonic() - started
        # Five wrong tokens get the form back (200); then the address is locked (429 with Retry-After).
        assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}, statuses
        assert retry_after == 60
        assert elapsed < 5  # refused quickly, without reading on: the lock holds the guesser, not the server
        # Even the right token is refused from the locked address (else guessing would go on at full speed) …
        async with guesser.post(
            url, data=f"token={TOKEN}", headers=form_headers, allow_redirects=False
        ) as resp:
            assert resp.status == 429
        # … while another address signs in at once.
        async with session_from("127.0.0.3") as other:
            async with other.post(
                url, data=f"token={TOKEN}", headers=form_headers, allow_redirects=False
            ) as resp:
                assert resp.status == 303 and "patterd_session" in resp.headers["Set-Cookie"]


async def test_wrong_bearer_tokens_are_throttled_per_address(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path, token=TOKEN) as served, session_from("127.0.0.4") as guesser:
        url = served.base_url + "/api/v1/status"
        statuses = []
        for n in range(8):
            async with guesser.get(url, headers={"Authorization": f"Bearer wrong-{n}"}) as resp:
                statuses.append(resp.status)
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3, statuses
        async with guesser.get(url) as resp:  # no token at all is not a guess, and says what is needed
            assert resp.status == 401
        async with guesser.post(
            served.base_url + "/webhooks/local/voice",
            json={},
            headers={"Authorization": "Bearer wrong-again"},
        ) as resp:
            assert resp.status == 429 and 0 < int(resp.headers["Retry-After"]) <= 60
        async with session_from("127.0.0.5") as other:
            async with other.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                assert resp.status == 200


async def test_dashboard_false_removes_its_routes(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path, dashboard=False) as served, aiohttp.ClientSession() as s:
        for path in (
            "/",
            "/calls",
            "/calls/abc",
            "/phone",
            "/login",
            "/static/dashboard.css",
            "/dashboard/stats.json",
        ):
            async with s.get(served.base_url + path, allow_redirects=False) as resp:
                assert resp.status == 404, path
        async with s.post(served.base_url + "/login", data="token=x") as resp:
            assert resp.status == 404
        async with s.get(served.base_url + "/api/v1/status") as resp:
            assert resp.status == 200
        async with s.post(served.base_url + "/webhooks/local/voice", json={}) as resp:
            assert resp.status == 201  # the carrier routes keep working
    async with serve_runtime(tmp_path / "on") as served, aiohttp.ClientSession() as s:
        async with s.get(served.base_url + "/static/dashboard.css") as resp:
            assert resp.status == 200
