"""The carriers' shared REST loop (providers/rest_call.py) against a real loopback server that answers a script."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from patterd.errors import ProviderAuthError, ProviderConnectionError, ProviderProtocolError
from patterd.providers import rest_call
from tests.serving import serve_app

API = rest_call.RestApi("acme", "Acme", "check the acme key", rest_call.twilio_style_reason)
CAPPED = rest_call.RestApi(
    "acme", "Acme", "check the acme key", rest_call.twilio_style_reason, retry_after_cap_secs=0.01
)


@dataclass
class Script:
    """Answers given in order (the last one repeats) and the requests' Authorization headers seen."""

    answers: deque[Response] = field(default_factory=deque)
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.seen.append(request.headers.get("authorization", ""))
        return self.answers.popleft() if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str, aiohttp.ClientSession]]:
    script = Script()
    app = Starlette(routes=[Route("/api", script.handle, methods=["GET", "POST"])])
    async with serve_app(app) as base, aiohttp.ClientSession() as session:
        yield script, base + "/api", session


async def test_a_503_is_retried_with_fresh_headers_each_attempt(
    server: tuple[Script, str, aiohttp.ClientSession],
) -> None:
    script, url, session = server
    script.answers.extend([Response("busy", 503), Response('{"sid": "CA1"}', 201)])
    tokens = iter(["Bearer one", "Bearer two"])
    answer = await rest_call.send(
        API,
        session,
        "POST",
        url,
        shown="/api",
        body=b"x=1",
        headers=lambda: {"Authorization": next(tokens)},
        max_attempts=3,
        backoff_secs=0.0,
    )
    assert answer == {"sid": "CA1"}
    assert script.seen == ["Bearer one", "Bearer two"]


async def test_a_refused_credential_is_not_retried_and_keeps_the_carriers_reason(
    server: tuple[Script, str, aiohttp.ClientSession],
) -> None:
    script, url, session = server
    script.answers.append(Response('{"code": 20003, "message": "Authenticate"}', 401))
    with pytest.raises(ProviderAuthError, match="Acme GET /api: HTTP 401 error 20003: Authenticate"):
        await rest_call.send(API, session, "GET", url, shown="/api", max_attempts=3, backoff_secs=0.0)
    assert len(script.seen) == 1


async def test_retries_stop_at_max_attempts(server: tuple[Script, str, aiohttp.ClientSession]) -> None:
    script, url, session = server
    script.answers.append(Response("", 500))
    with pytest.raises(ProviderConnectionError, match="HTTP 500 no body") as raised:
        await rest_call.send(API, session, "GET", url, shown="/api", max_attempts=2, backoff_secs=0.0)
    assert raised.value.provider == "acme"
    assert len(script.seen) == 2


async def test_retry_after_is_honoured_up_to_the_cap(
    server: tuple[Script, str, aiohttp.ClientSession],
) -> None:
    script, url, session = server
    script.answers.extend([Response("slow down", 429, headers={"Retry-After": "0"}), Response("{}", 200)])
    # The backoff alone would wait an hour: only the capped Retry-After lets this finish.
    answer = await asyncio.wait_for(
        rest_call.send(CAPPED, session, "GET", url, shown="/api", max_attempts=2, backoff_secs=3600.0), 30
    )
    assert answer == {}


@pytest.mark.parametrize(
    ("body", "complaint"), [("not json", "answer is not JSON"), ("[1, 2]", "expected a JSON object")]
)
async def test_a_2xx_answer_must_be_a_json_object(
    server: tuple[Script, str, aiohttp.ClientSession], body: str, complaint: str
) -> None:
    script, url, session = server
    script.answers.append(Response(body, 200))
    with pytest.raises(ProviderProtocolError, match=complaint):
        await rest_call.send(API, session, "GET", url, shown="/api", max_attempts=3, backoff_secs=0.0)
    assert len(script.seen) == 1


async def test_an_unreachable_api_is_a_connection_error(
    server: tuple[Script, str, aiohttp.ClientSession],
) -> None:
    _script, _url, session = server
    with pytest.raises(ProviderConnectionError, match=r"Acme GET http://127\.0\.0\.1:9/"):
        await rest_call.send(
            API, session, "GET", "http://127.0.0.1:9/", shown="/", max_attempts=1, backoff_secs=0.0
        )
