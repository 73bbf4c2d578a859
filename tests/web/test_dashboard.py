"""Dashboard pages, login/logout and CSRF rules, the plot's routes, and static files, through the real app."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.types import ASGIApp, Message

from patterd.protocols.events import CallEnded, CallStarted, TranscriptLine
from patterd.store import CallStore
from patterd.web.app import create_app
from patterd.web.auth import COOKIE_NAME
from patterd.web.dashboard import json_for_script, safe_next, same_origin
from patterd.web.feed import EventFeed
from patterd.web.runtime import ReloadResult

TOKEN = "s3cret-token"
SAME_ORIGIN = {"Origin": "http://testserver"}


@dataclass
class FakeRuntime:
    """The daemon as the web app sees it, with a real in-memory store and feed."""

    token: str | None = TOKEN
    loopback: bool = True
    version: str = "9.8.7"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(minutes=5))
    store: CallStore = field(default_factory=lambda: CallStore(None))
    feed: EventFeed = field(default_factory=EventFeed)
    metrics: Any = None
    switchboard: Any = field(
        default_factory=lambda: SimpleNamespace(
            calls={},
            draining=False,
            live_count=0,
            graph=SimpleNamespace(
                generation=2,
                agents={"front-desk": None},
                config=SimpleNamespace(carrier=SimpleNamespace(type="local")),
            ),
        )
    )
    state: str = "serving"
    config_digest: str = "ab" * 32

    async def reload(self, reason: str) -> ReloadResult:
        return ReloadResult(ok=True, generation=3)


def add_call(
    runtime: FakeRuntime, call_id: str, *, text: str = "hello", latency_ms: float = 420.0, end: bool = True
) -> None:
    """Feed a short call's events into the store, as a call session would."""
    t0 = datetime.now(UTC) - timedelta(minutes=2)
    store = runtime.store
    store.handle(
        CallStarted(
            call_id,
            t0,
            agent="front-desk",
            agent_provider="pipeline",
            carrier="local",
            caller="+15551234567",
            callee="",
        )
    )
    store.handle(TranscriptLine(call_id, t0 + timedelta(seconds=1), role="assistant", text="Welcome!"))
    store.handle(TranscriptLine(call_id, t0 + timedelta(seconds=3), role="user", text=text))
    store.handle(
        TranscriptLine(
            call_id, t0 + timedelta(seconds=4), role="assistant", text="Sure.", latency_ms=latency_ms
        )
    )
    if end:
        store.handle(CallEnded(call_id, t0 + timedelta(seconds=10), status="completed", duration_ms=10_000))


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes
    set_cookies: list[str]

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """A small in-process HTTP client for an ASGI app, with a cookie jar.

    Starlette's TestClient needs httpx2, which is not a project dependency; the dashboard's
    routes only need plain request/response, which this drives directly over ASGI.
    """

    def __init__(self, app: ASGIApp, host: str = "testserver") -> None:
        self.app = app
        self.host = host
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, content: str = ""
    ) -> Reply:
        return asyncio.run(self._request(method, url, headers or {}, content.encode()))

    def get(self, url: str, **kw: Any) -> Reply:
        kw.pop("follow_redirects", None)  # never followed: tests look at the redirect itself
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> Reply:
        kw.pop("follow_redirects", None)
        return self.request("POST", url, **kw)

    async def _request(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        parts = urlsplit(url)
        raw = {"host": self.host, **{k.lower(): v for k, v in headers.items()}}
        if self.cookies:
            raw["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body:
            raw["content-length"] = str(len(body))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": [(k.encode(), v.encode()) for k, v in raw.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        sent = False
        out: list[Message] = []

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            out.append(message)

        await self.app(scope, receive, send)
        start = next(m for m in out if m["type"] == "http.response.start")
        pairs = [(k.decode().lower(), v.decode("latin-1")) for k, v in start["headers"]]
        cookies = [v for k, v in pairs if k == "set-cookie"]
        for line in cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        content = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
        return Reply(start["status"], dict(pairs), content, cookies)


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def client(runtime: FakeRuntime) -> Client:
    return Client(create_app(runtime))  # type: ignore[arg-type]


def login(client: Client, token: str = TOKEN, next_path: str = "/") -> Reply:
    return client.post(
        "/login",
        content=f"token={token}&next={next_path}",
        headers={"Content-Type": "application/x-www-form-urlencoded", **SAME_ORIGIN},
    )


def test_pages_redirect_to_the_login_form_without_a_token(client: Client) -> None:
    resp = client.get("/", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login?next=/"
    form = client.get("/login?next=/calls/abc")
    assert form.status_code == 200
    assert 'name="token"' in form.text and 'value="/calls/abc"' in form.text
    assert '<label for="token">' in form.text


def test_login_sets_a_strict_httponly_cookie_and_redirects_to_next(client: Client) -> None:
    resp = login(client, next_path="/calls/abc")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/calls/abc"
    cookie = resp.set_cookies[0]
    assert cookie.startswith(f"{COOKIE_NAME}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    page = client.get("/")
    assert page.status_code == 200
    assert "Log out" in page.text


def test_login_over_https_marks_the_cookie_secure(client: Client) -> None:
    resp = client.post(
        "/login",
        content=f"token={TOKEN}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            **SAME_ORIGIN,
            "X-Forwarded-Proto": "https",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303
    assert "Secure" in resp.set_cookies[0]


def test_a_wrong_token_is_refused_without_a_cookie(client: Client) -> None:
    resp = login(client, token="nope")
    assert resp.status_code == 200
    assert "set-cookie" not in resp.headers
    assert "That token is not right." in resp.text
    assert client.get("/", follow_redirects=False).status_code == 303


def test_login_from_another_site_is_refused(client: Client) -> None:
    resp = client.post(
        "/login",
        content=f"token={TOKEN}",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert resp.status_code == 403
    assert "set-cookie" not in resp.headers


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/calls/x?y=1", "/calls/x?y=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("calls", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_login_only_redirects_to_same_site_paths(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected


def test_logout_needs_the_csrf_header_or_our_origin(client: Client) -> None:
    login(client)
    refused = client.post("/logout", follow_redirects=False)
    assert refused.status_code == 403
    resp = client.post("/logout", headers={"X-Patterd-CSRF": "1"}, follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/login"
    assert resp.set_cookies[0].startswith(f'{COOKIE_NAME}="";')
    assert COOKIE_NAME not in client.cookies


def test_same_origin_compares_the_origin_host_with_the_host_header() -> None:
    from starlette.requests import Request

    def request(headers: dict[str, str]) -> Request:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        return Request({"type": "http", "method": "POST", "path": "/", "headers": raw, "query_string": b""})

    assert same_origin(request({"Host": "a.example:8000", "Origin": "http://a.example:8000"}))
    assert same_origin(request({"Host": "a.example", "Origin": "https://a.example"}))  # behind a TLS tunnel
    assert not same_origin(request({"Host": "a.example", "Origin": "https://b.example"}))
    assert not same_origin(request({"Host": "a.example", "Origin": "null"}))
    assert not same_origin(request({"Host": "a.example"}))
    assert same_origin(request({"Host": "a.example", "X-Patterd-CSRF": "1"}))


def test_the_dashboard_shows_status_chart_and_filters(client: Client, runtime: FakeRuntime) -> None:
    add_call(runtime, "call_one")
    login(client)
    resp = client.get("/")
    assert resp.status_code == 200
    html = resp.text
    assert "9.8.7" in html
    assert runtime.config_digest[:12] in html
    assert '<svg class="chart"' in html
    assert "1 call · 0 failed · p50 420 ms" in html
    assert "<option>front-desk</option>" in html
    assert 'id="phone"' in html and 'id="open-phone"' in html
    assert "/static/dashboard.js" in html and "/static/browser-phone.js" in html
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for label in re.findall(r'<label for="([^"]+)"', html):  # every label names a control that exists
        assert f'id="{label}"' in html


def test_the_call_page_embeds_the_record_safely(client: Client, runtime: FakeRuntime) -> None:
    hostile = "</script><script>alert(1)</script> & <b>"
    add_call(runtime, "call_two", text=hostile, end=False)
    runtime.switchboard.calls["call_two"] = object()
    login(client)
    resp = client.get("/calls/call_two")
    assert resp.status_code == 200
    assert "<script>alert(1)" not in resp.text
    match = re.search(r'<script type="application/json" id="call-data">(.*?)</script>', resp.text, re.S)
    assert match is not None
    record = json.loads(match.group(1))
    assert record["live"] is True
    assert record["metadata"]["call_id"] == "call_two"
    assert [line["text"] for line in record["transcript"]] == ["Welcome!", hostile, "Sure."]
    assert record["transcript"][2]["latency_ms"] == 420.0


def test_an_unknown_call_is_a_404_page(client: Client) -> None:
    login(client)
    resp = client.get("/calls/call_missing")
    assert resp.status_code == 404
    assert "call_missing" in resp.text and "text/html" in resp.headers["content-type"]


def test_stats_and_chart_routes(client: Client, runtime: FakeRuntime) -> None:
    add_call(runtime, "call_a", latency_ms=300.0)
    add_call(runtime, "call_b", latency_ms=900.0)
    login(client)
    stats = client.get("/dashboard/stats.json").json()
    assert len(stats["hours"]) == 24
    assert stats["totals"]["calls"] == 2
    assert stats["totals"]["p50_ms"] == 300.0
    assert stats["totals"]["p95_ms"] == 900.0
    assert sum(h["calls"] for h in stats["hours"]) == 2
    svg = client.get("/dashboard/chart.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and "2 calls in the last 24 hours" in svg.text


def test_the_phone_page_and_static_files(client: Client) -> None:
    login(client)
    page = client.get("/phone")
    assert page.status_code == 200
    assert 'id="phone-call"' in page.text and "/static/browser-phone.js" in page.text
    client.cookies.clear()
    for name in (
        "dashboard.css",
        "dashboard.js",
        "browser-phone.js",
        "browser-phone-worklet.js",
        "favicon.svg",
    ):
        resp = client.get(f"/static/{name}")  # static files need no token: they hold no data
        assert resp.status_code == 200, name
        assert len(resp.content) > 100
    assert "registerProcessor" in client.get("/static/browser-phone-worklet.js").text


def test_without_a_token_on_loopback_the_dashboard_is_open() -> None:
    runtime = FakeRuntime(token=None)
    c = Client(create_app(runtime))  # type: ignore[arg-type]
    assert c.get("/").status_code == 200
    resp = c.get("/login?next=/phone", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/phone"
    assert "Log out" not in c.get("/").text


def test_json_for_script_cannot_close_the_element() -> None:
    text = json_for_script({"t": "</script><!--"})
    assert "<" not in text and ">" not in text
    assert json.loads(text) == {"t": "</script><!--"}


def test_hourly_stats_pages_through_the_store_and_buckets_by_hour() -> None:
    from patterd.web import call_stats
    from patterd.web.metrics_svg import nice_ceiling, render_chart

    now = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
    metas = [
        {
            "call_id": f"c{i}",
            "started_at": (now - timedelta(minutes=20 * i)).isoformat().replace("+00:00", "Z"),
            "status": "failed" if i % 5 == 0 else "completed",
            "cost": {"total": 0.01},
            "latency": {"p50_ms": 100.0 + i, "p95_ms": 200.0 + i},
        }
        for i in range(90)  # 30 hours of calls, 3 an hour: the oldest are out of range
    ]

    class Lister:
        pages = 0

        def list_calls(self, *, since: Any, until: Any, limit: int, cursor: str | None, **_: Any) -> Any:
            self.pages += 1
            inside = [m for m in metas if since <= datetime.fromisoformat(m["started_at"]) < until]
            start = int(cursor or 0)
            page = inside[start : start + limit]
            more = start + limit < len(inside)
            return page, str(start + limit) if more else None

    lister = Lister()
    original = call_stats.PAGE
    call_stats.PAGE = 10
    try:
        stats = call_stats.hourly_stats(lister, now)
    finally:
        call_stats.PAGE = original
    # The window is the 24 whole hours up to 13:00: calls from yesterday 13:00 (i ≤ 70) count.
    assert lister.pages == 8  # 71 calls, 10 a page
    assert stats["totals"]["calls"] == 71
    assert stats["hours"][-1]["calls"] == 2  # 12:30 and 12:10 in the current hour
    assert stats["totals"]["failed"] == sum(1 for i in range(71) if i % 5 == 0)
    assert stats["totals"]["cost_usd"] == pytest.approx(0.71)
    assert stats["hours"][-1]["p50_ms"] == 100.0 and stats["hours"][-1]["p95_ms"] == 201.0
    assert not stats["truncated"]
    svg = render_chart(stats)
    assert svg.count('class="bar"') == 24 + 1  # one bar per hour with calls, plus the legend's swatch
    assert 'class="line p50"' in svg and 'class="line p95"' in svg
    assert [nice_ceiling(v) for v in (0, 0.3, 3, 7, 11, 240)] == [1.0, 0.5, 5.0, 10.0, 20.0, 250.0]


def _day_of_calls(now: datetime, per_hour: list[int]) -> dict[str, Any]:
    """hourly_stats output for 24 hours ending with the hour of `now`, `per_hour[i]` calls in hour i."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    hours = [
        {
            "start": (end - timedelta(hours=24 - i)).isoformat().replace("+00:00", "Z"),
            "calls": n,
            "failed": 0,
            "p50_ms": 400.0 if n else None,
            "p95_ms": 900.0 if n else None,
        }
        for i, n in enumerate(per_hour)
    ]
    return {"hours": hours, "totals": {"calls": sum(per_hour), "failed": 0, "p50_ms": 400.0, "p95_ms": 900.0}}


def test_the_calls_axis_ticks_in_whole_calls() -> None:
    from patterd.web.metrics_svg import integer_step, render_chart

    assert [integer_step(v) for v in (0, 1, 4, 5, 9, 13, 21, 170)] == [1, 1, 1, 2, 5, 5, 10, 50]
    now = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
    for busiest in (0, 1, 3, 5, 7, 13, 25, 999):
        svg = render_chart(_day_of_calls(now, [0] * 23 + [busiest]))
        ticks = re.findall(r'class="axis calls-tick"[^>]*>([^<]*)<', svg)
        assert len(ticks) == 5 and all(t.isdigit() for t in ticks), (busiest, ticks)
        assert int(ticks[-1]) >= busiest


def test_a_narrow_chart_shows_the_most_recent_hours_at_its_real_width() -> None:
    from patterd.web.metrics_svg import MIN_WIDTH, render_chart

    now = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
    stats = _day_of_calls(now, list(range(24)))
    wide = render_chart(stats)
    assert 'data-hours="24"' in wide and 'viewBox="0 0 960 ' in wide
    narrow = render_chart(stats, width=320)
    shown = int(re.search(r'data-hours="(\d+)"', narrow).group(1))  # type: ignore[union-attr]
    assert 6 <= shown <= 12 and 'viewBox="0 0 320 ' in narrow and 'width="320"' in narrow
    # The newest hours, and the current one is labelled.
    bars = re.findall(r'<rect class="bar"[^>]*><title>(\d\d:\d\d) UTC: (\d+) call', narrow)
    assert [int(n) for _, n in bars if int(n)] == list(range(24 - shown, 24))
    hour_labels = re.findall(r'class="axis hour"[^>]*>([^<]*)<', narrow)
    assert hour_labels[-1] == "12:00"
    assert 'viewBox="0 0 280 ' in render_chart(stats, width=10) and MIN_WIDTH == 280


def test_the_chart_names_its_time_zone_and_labels_hours_in_it(client: Client, runtime: FakeRuntime) -> None:
    from zoneinfo import ZoneInfo

    from patterd.web.dashboard import chart_zone
    from patterd.web.metrics_svg import render_chart

    now = datetime(2026, 7, 4, 12, 30, tzinfo=UTC)
    svg = render_chart(
        _day_of_calls(now, [1] * 24), tz=ZoneInfo("America/New_York"), tz_name="America/New_York"
    )
    assert "(America/New_York)" in svg and "America/New_York time" in svg
    assert re.findall(r'class="axis hour"[^>]*>([^<]*)<', svg)[-1] == "08:00"  # 12:00 UTC is 08:00 EDT
    assert chart_zone("Europe/Paris")[1] == "Europe/Paris"
    for bad in ("", None, "Not/AZone", "../../etc/passwd", "<script>", "x" * 100):
        assert chart_zone(bad)[1] == "UTC"
    login(client)
    resp = client.get("/dashboard/chart.svg?width=390&tz=Asia/Tokyo")
    assert 'data-tz="Asia/Tokyo"' in resp.text and 'viewBox="0 0 390 ' in resp.text
    assert 'data-tz="UTC"' in client.get("/dashboard/chart.svg?width=abc&tz=%3Cb%3E").text


def test_the_call_page_says_whether_the_carrier_can_transfer(runtime: FakeRuntime) -> None:
    from patterd.providers.local import LocalCarrier

    add_call(runtime, "call_local")
    runtime.switchboard.graph.carriers = {"local": LocalCarrier.__new__(LocalCarrier), "twilio": object()}
    client = Client(create_app(runtime))  # type: ignore[arg-type]
    login(client)

    def embedded(call_id: str) -> dict[str, Any]:
        html = client.get(f"/calls/{call_id}").text
        match = re.search(r'id="call-data">(.*?)</script>', html, re.S)
        assert match is not None
        return dict(json.loads(match.group(1)))

    assert embedded("call_local")["can_transfer"] is False
    runtime.store.handle(CallStarted("call_twilio", datetime.now(UTC), agent="front-desk", carrier="twilio"))
    assert embedded("call_twilio")["can_transfer"] is True
    runtime.store.handle(CallStarted("call_gone", datetime.now(UTC), agent="front-desk", carrier="telnyx"))
    assert embedded("call_gone")["can_transfer"] is False  # a carrier this config does not run


def test_records_count_error_events_and_skip_partial_transcripts() -> None:
    from patterd.protocols.events import CallFailed, TranscriptPartial
    from patterd.protocols.local import transcript_message

    store = CallStore(None)
    t0 = datetime.now(UTC)
    store.handle(CallStarted("call_x", t0, agent="a"))
    store.handle(TranscriptPartial("call_x", t0, role="assistant", text="Hello", turn="r1"))
    for _ in range(2):
        store.handle(CallFailed("call_x", t0, component="llm", message="refused"))
    store.handle(CallEnded("call_x", t0 + timedelta(seconds=1), status="completed"))
    call = store.get_call("call_x")
    assert call is not None
    assert call["metadata"]["errors"] == 2 and call["metadata"]["status"] == "completed"
    assert call["transcript"] == [] and "transcript_partial" not in [e["type"] for e in call["events"]]
    assert json.loads(transcript_message("assistant", "Hi", partial=True)) == {
        "event": "transcript",
        "role": "assistant",
        "text": "Hi",
        "partial": True,
    }
    assert "partial" not in json.loads(transcript_message("assistant", "Hi"))


def test_costs_have_one_format(client: Client, runtime: FakeRuntime) -> None:
    from patterd.web.dashboard import _totals_text

    assert _totals_text({"totals": {"calls": 2, "failed": 0, "cost_usd": 1.00591}}).endswith("$1.0059")
    assert _totals_text({"totals": {"calls": 2, "failed": 0, "cost_usd": 0.06}}).endswith("$0.0600")
    js = client.get("/static/dashboard.js").text
    assert "toFixed(2)" not in js  # every amount goes through fmtCost's 4 decimals
