"""The web dashboard: live calls, history, call pages, the browser phone page and the login form.

Pages are small string.Template files in `templates/` filled with escaped values; the live parts
(SSE feed, history paging, the browser phone) are plain JavaScript in `static/`, no build step.

CSRF: the login cookie is SameSite=Strict and HttpOnly; the dashboard's own POSTs (login, logout)
also need a same-origin `Origin` or the `X-Patterd-CSRF` header that the page's fetch() sends.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from datetime import UTC, datetime, tzinfo
from html import escape
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from patterd.plugins.registry import Registry, load_registry
from patterd.store.recording_path import recording_file
from patterd.web.auth import COOKIE_NAME, check_access, client_address, token_matches
from patterd.web.call_stats import hourly_stats
from patterd.web.metrics_svg import WIDTH, render_chart
from patterd.web.runtime import Runtime
from patterd.web.throttle import FailureThrottle

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CSRF_HEADER = "x-patterd-csrf"
MAX_FORM_BYTES = 8192
# Pages are same-origin only: scripts, styles and connections (fetch, SSE, the browser phone's
# websocket) come from this daemon; no framing (the page has hang-up and transfer buttons).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LIVE_STATUSES = frozenset({"ringing", "in_progress"})
ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*")

_templates: dict[str, Template] = {}


def template(name: str) -> Template:
    """A template from templates/, read once."""
    found = _templates.get(name)
    if found is None:
        found = Template((TEMPLATES / f"{name}.html").read_text(encoding="utf-8"))
        _templates[name] = found
    return found


def safe_next(value: str | None) -> str:
    """A redirect target after login: a same-site relative path, else `/`."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return "/"
    return value


def same_origin(request: Request) -> bool:
    """The request came from our own page: the CSRF header, or an `Origin` naming this host."""
    if request.headers.get(CSRF_HEADER) == "1":
        return True
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def is_https(request: Request) -> bool:
    """Whether the browser talks https to us (directly, or through a tunnel/proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme in ("https", "wss") or forwarded == "https"


def json_for_script(value: Any) -> str:
    """JSON safe inside a `<script type="application/json">` element."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def chart_zone(name: str | None) -> tuple[tzinfo, str]:
    """The IANA time zone the page asked the chart in; UTC for none or an unknown name."""
    if not name or name == "UTC" or len(name) > 64 or not ZONE_NAME.fullmatch(name):
        return UTC, "UTC"
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError):
        return UTC, "UTC"


def chart_width(value: str | None) -> int:
    """The chart's width in px as the page asked (its container's width), else the default."""
    try:
        return int(value) if value else WIDTH
    except ValueError:
        return WIDTH


def _uptime(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _totals_text(stats: dict[str, Any]) -> str:
    totals = stats["totals"]
    calls = totals["calls"]
    parts = [f"{calls} call{'' if calls == 1 else 's'}", f"{totals['failed']} failed"]
    if totals.get("p50_ms") is not None:
        parts.append(f"p50 {totals['p50_ms']:.0f} ms")
    if totals.get("p95_ms") is not None:
        parts.append(f"p95 {totals['p95_ms']:.0f} ms")
    if totals.get("cost_usd"):
        parts.append(f"${totals['cost_usd']:.4f}")
    return " · ".join(parts)


def _browser_phone_voice(registry: Registry) -> str:
    """Where the browser phone places calls: the voice webhook of the carrier with dashboard access."""
    for loaded in registry.of_kind("carrier"):  # only the carriers' modules get imported
        facts = loaded.spec.carrier
        if facts is not None and facts.access == "dashboard":
            return facts.webhook_route(loaded.spec.name).replace("{hook}", "voice")
    return ""  # none installed: the Call button reports the 404 it gets


def dashboard_routes(
    runtime: Runtime, throttle: FailureThrottle | None = None, registry: Registry | None = None
) -> list[BaseRoute]:
    """Dashboard pages, the login form, the plot's data, and /static (carriers from `registry`)."""
    # Wrong tokens per client address (web.throttle); create_app shares one with the API and the browser phone.
    guesses = FailureThrottle() if throttle is None else throttle
    voice = _browser_phone_voice(load_registry() if registry is None else registry)

    def cookie_session(request: Request) -> bool:
        """Signed in through the login form (so a Log out button makes sense)."""
        return bool(runtime.token) and token_matches(request.cookies.get(COOKIE_NAME), runtime.token or "")

    def page(
        request: Request,
        name: str,
        title: str,
        body: str,
        *,
        scripts: tuple[str, ...] = (),
        status: int = 200,
    ) -> Response:
        tags = "\n".join(
            f'<script src="/static/{s}?v={escape(runtime.version)}" defer></script>' for s in scripts
        )
        html = template("base").substitute(
            title=escape(title),
            version=escape(runtime.version),
            page=name,
            nav_home=' aria-current="page"' if name == "index" else "",
            nav_phone=' aria-current="page"' if name == "phone" else "",
            logout=template("logout").substitute() if cookie_session(request) else "",
            body=body,
            scripts=tags,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def browser_phone() -> str:
        return template("browser_phone").substitute(to="", voice=escape(voice))

    def agent_names() -> list[str]:
        try:
            return list(runtime.switchboard.graph.agents)
        except AttributeError:
            return []

    def carrier_can_transfer(name: Any) -> bool:
        """Whether the call's carrier can transfer (the browser phone cannot): the page hides Transfer."""
        try:
            carrier = runtime.switchboard.graph.carriers.get(str(name))
        except AttributeError:
            return False
        return carrier is not None and bool(getattr(carrier, "can_transfer", True))

    def stats_now() -> dict[str, Any]:
        return hourly_stats(runtime.store, datetime.now(UTC))

    async def index(request: Request) -> Response:
        stats = stats_now()
        digest = runtime.config_digest
        options = "".join(f"<option>{escape(n)}</option>" for n in agent_names())
        try:
            carrier = str(runtime.switchboard.graph.config.carrier.type)
        except AttributeError:
            carrier = "?"
        body = template("index").substitute(
            browser_phone=browser_phone(),
            state=escape(runtime.state),
            version=escape(runtime.version),
            started_at=escape(runtime.started_at.isoformat()),
            uptime=escape(_uptime((datetime.now(UTC) - runtime.started_at).total_seconds())),
            digest=escape(digest),
            digest_short=escape(digest[:12]),
            carrier=escape(carrier),
            records=escape(str(runtime.store.stats().get("records", 0))),
            totals=escape(_totals_text(stats)),
            chart=render_chart(stats),
            agent_options=options,
        )
        return page(request, "index", "Dashboard", body, scripts=("dashboard.js", "browser-phone.js"))

    async def call_page(request: Request) -> Response:
        call_id = request.path_params["call_id"]
        record = await asyncio.to_thread(runtime.store.get_call, call_id)  # a query: off the loop
        if record is None:
            body = template("notfound").substitute(
                message=escape(f"There is no call {call_id!r} on this daemon.")
            )
            return page(request, "call", "Not found", body, status=404)
        record["live"] = call_id in runtime.switchboard.calls
        record["can_transfer"] = carrier_can_transfer(record["metadata"].get("telephony_provider"))
        record["has_recording"] = recording_file(runtime.store, call_id) is not None  # call-player.js
        body = template("call").substitute(call_id=escape(call_id), record_json=json_for_script(record))
        return page(request, "call", f"Call {call_id}", body, scripts=("dashboard.js", "call-player.js"))

    async def calls_index(request: Request) -> Response:
        return RedirectResponse("/#history-title", status_code=303)

    async def phone(request: Request) -> Response:
        body = template("phone").substitute(browser_phone=browser_phone())
        return page(request, "phone", "Browser phone", body, scripts=("browser-phone.js",))

    async def stats_json(request: Request) -> Response:
        return JSONResponse(stats_now(), headers={"Cache-Control": "no-store"})

    async def chart_svg(request: Request) -> Response:
        # The page asks at its real width and in the browser's time zone (see dashboard.js).
        zone, zone_name = chart_zone(request.query_params.get("tz"))
        svg = render_chart(
            stats_now(), width=chart_width(request.query_params.get("width")), tz=zone, tz_name=zone_name
        )
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    def login_form(request: Request, next_path: str, error: str = "", status: int = 200) -> Response:
        note = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
        body = template("login").substitute(next=escape(next_path), error=note)
        return page(request, "login", "Sign in", body, status=status)

    def locked_out(request: Request, next_path: str, wait: float) -> Response:
        seconds = math.ceil(wait)
        response = login_form(
            request, next_path, f"Too many wrong tokens from your address: try again in {seconds} s.", 429
        )
        response.headers["Retry-After"] = str(seconds)
        return response

    async def login(request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        access = check_access(request, runtime.token, loopback=runtime.loopback, throttle=guesses)
        if not runtime.token or access.ok:
            return RedirectResponse(next_path, status_code=303)
        if access.retry_after > 0:
            return locked_out(request, next_path, access.retry_after)
        return login_form(request, next_path)

    async def login_post(request: Request) -> Response:
        if not same_origin(request):
            return login_form(request, "/", "This sign-in did not come from this dashboard's page.", 403)
        wait = guesses.retry_after(client_address(request))
        if runtime.token and wait > 0:  # refused before the body is even read
            return locked_out(request, "/", wait)
        raw = await request.body()  # at most 8 KB: web.limits refuses a larger body while it streams
        if len(raw) > MAX_FORM_BYTES:
            return login_form(request, "/", "The form is too large.", 413)
        fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        given = fields.get("token", [""])[0]
        next_path = safe_next(fields.get("next", ["/"])[0])
        if not runtime.token:
            return RedirectResponse(next_path, status_code=303)
        if not token_matches(given, runtime.token):
            if given:
                guesses.failed(client_address(request), given)
            # 200, not 401: the browser shows the form again (a 4xx document is a console error).
            return login_form(request, next_path, "That token is not right.")
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(
            COOKIE_NAME, given, httponly=True, samesite="strict", path="/", secure=is_https(request)
        )
        return response

    async def logout(request: Request) -> Response:
        if not same_origin(request):
            return JSONResponse(
                {"error": {"code": "forbidden", "message": "cross-site request refused"}}, status_code=403
            )
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            COOKIE_NAME, path="/", httponly=True, samesite="strict", secure=is_https(request)
        )
        return response

    return [
        Route("/", index, methods=["GET"]),
        Route("/calls", calls_index, methods=["GET"]),
        Route("/calls/{call_id}", call_page, methods=["GET"]),
        Route("/phone", phone, methods=["GET"]),
        Route("/login", login, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/dashboard/stats.json", stats_json, methods=["GET"]),
        Route("/dashboard/chart.svg", chart_svg, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
