"""The tools an agent can call: end_call, transfer_call and webhook tools, as schemas and as actions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from patterd.errors import PatterdError
from patterd.hosts import host_allowed, url_host
from patterd.http_session import HTTPSource, session_of
from patterd.lazy import lazy_import
from patterd.protocols.jsontext import clean_text
from patterd.providers.kinds import ToolSchema
from patterd.redact import redact_url, redact_urls

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")  # imported by the first webhook tool call (start-up, issue 14)

MAX_RESPONSE_BYTES = 64 * 1024  # default cap on what a webhook may send back (it all goes to the model)
MAX_REDIRECTS = 5  # with follow_redirects: hops before giving up
ERROR_BODY_CHARS = 200  # how much of an error answer the model is shown
READ_CHUNK_BYTES = 16 * 1024


@dataclass(frozen=True)
class WebhookTool:
    """A tool that POSTs its JSON arguments to a URL and returns the response body to the model."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    url: str
    timeout_secs: float = 5.0
    headers: Mapping[str, str] | None = None
    max_response_bytes: int = MAX_RESPONSE_BYTES
    follow_redirects: bool = False
    allowed_hosts: tuple[str, ...] = ()  # empty: any host; else the URL and every redirect must match

    @property
    def shown_url(self) -> str:
        """The URL as errors, records and logs may show it: no credentials."""
        return redact_url(self.url)


@dataclass(frozen=True)
class ToolSet:
    """The tools of one agent: what the model sees, and what to do when it calls them."""

    end_call: bool = False
    transfer_numbers: tuple[str, ...] = ()
    webhooks: tuple[WebhookTool, ...] = ()

    def schemas(self) -> list[ToolSchema]:
        """The function schemas offered to the model."""
        out: list[ToolSchema] = []
        if self.end_call:
            out.append(
                ToolSchema(
                    name="end_call",
                    description="End the call. Say goodbye first; call this when the conversation is over.",
                    parameters={
                        "type": "object",
                        "properties": {"reason": {"type": "string", "description": "Why the call ends."}},
                    },
                )
            )
        if self.transfer_numbers:
            out.append(
                ToolSchema(
                    name="transfer_call",
                    description="Transfer the caller to a human at one of the allowed numbers.",
                    parameters={
                        "type": "object",
                        "properties": {"number": {"type": "string", "enum": list(self.transfer_numbers)}},
                        "required": ["number"],
                    },
                )
            )
        out.extend(ToolSchema(w.name, w.description, w.parameters) for w in self.webhooks)
        return out


class ToolFailure(Exception):
    """A tool could not do its job; the message goes back to the model as the tool's error."""


@dataclass
class ToolActions:
    """What the call session lets tools do to the call."""

    end_call: Callable[[str], Awaitable[None]]
    transfer: Callable[[str], Awaitable[None]]


async def run_tool(
    tools: ToolSet,
    name: str,
    arguments: Mapping[str, Any],
    actions: ToolActions,
    http: HTTPSource | None,
) -> str:
    """Run one tool call and return the text for the model; raises ToolFailure on a refused or failed call."""
    if name == "end_call" and tools.end_call:
        await actions.end_call(str(arguments.get("reason", "")))
        return json.dumps({"status": "ending call"})
    if name == "transfer_call" and tools.transfer_numbers:
        number = str(arguments.get("number", ""))
        if number not in tools.transfer_numbers:
            raise ToolFailure(
                f"transfer to {number!r} is not allowed; allowed: {', '.join(tools.transfer_numbers)}"
            )
        await actions.transfer(number)
        return json.dumps({"status": "transferring", "number": number})
    for hook in tools.webhooks:
        if hook.name == name:
            return await _call_webhook(hook, arguments, http)
    raise ToolFailure(f"unknown tool {name!r}")


async def answer_tool(
    tools: ToolSet,
    name: str,
    arguments: Mapping[str, Any],
    actions: ToolActions,
    http: HTTPSource | None,
) -> tuple[str, str | None]:
    """Run a tool the model called: (text for the model, error); a failure is an error result, never raised."""
    try:
        return await run_tool(tools, name, arguments, actions, http), None
    except ToolFailure as exc:
        error = str(exc)
    except PatterdError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return json.dumps({"error": error}), error


async def _call_webhook(hook: WebhookTool, arguments: Mapping[str, Any], http: HTTPSource | None) -> str:
    if http is None:
        raise ToolFailure("webhook tools are unavailable: no HTTP session")
    try:
        async with asyncio.timeout(hook.timeout_secs):
            return await _post(hook, dict(arguments), session_of(http))
    except TimeoutError as exc:
        raise ToolFailure(f"{hook.shown_url} did not answer within {hook.timeout_secs:g} s") from exc
    except aiohttp.ClientError as exc:
        # aiohttp's messages may quote the URL (InvalidURL does): never with its credentials.
        raise ToolFailure(f"{hook.shown_url} failed: {type(exc).__name__}: {redact_urls(str(exc))}") from exc


async def _post(hook: WebhookTool, arguments: dict[str, Any], http: aiohttp.ClientSession) -> str:
    """POST the arguments, following redirects only when allowed; the capped body as text."""
    url = hook.url
    origin = _origin(url)
    method, body = "POST", arguments
    for _ in range(MAX_REDIRECTS + 1):
        if not host_allowed(url_host(url), hook.allowed_hosts):
            raise ToolFailure(f"{redact_url(url)} is not on allowed_hosts of tool {hook.name!r}")
        # The tool's headers usually carry its credentials: only its own origin gets them (not another
        # host, nor the same host over plain http after an https url).
        headers = dict(hook.headers or {}) if _origin(url) == origin else {}
        async with http.request(
            method,
            url,
            json=body if method == "POST" else None,
            headers=headers,
            allow_redirects=False,
        ) as resp:
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                target = urljoin(url, resp.headers["Location"])
                if not hook.follow_redirects:
                    raise ToolFailure(
                        f"{hook.shown_url} answered HTTP {resp.status}, a redirect to "
                        f"{redact_url(target)}; redirects are not followed (follow_redirects: false)"
                    )
                scheme = urlsplit(target).scheme
                if scheme not in ("http", "https"):
                    raise ToolFailure(f"{hook.shown_url} redirected to a non-HTTP URL ({scheme}:)")
                if resp.status in (301, 302, 303):  # what browsers and aiohttp do: the body is not re-sent
                    method, body = "GET", {}
                url = target
                continue
            text, truncated = await _read_capped(resp, hook.max_response_bytes)
            if resp.status >= 400:
                detail = redact_urls(text[:ERROR_BODY_CHARS])  # an error page may echo the request URL
                raise ToolFailure(f"{hook.shown_url} answered HTTP {resp.status}: {detail}")
            if truncated:
                # The first max_response_bytes only, said so plainly: the model must not take it for all of it.
                return json.dumps(
                    {
                        "truncated": True,
                        "note": f"the response exceeded max_response_bytes ({hook.max_response_bytes}); "
                        "this is only its beginning",
                        "partial_body": text,
                    }
                )
            return text
    raise ToolFailure(f"{hook.shown_url} redirected more than {MAX_REDIRECTS} times")


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return parts.scheme, parts.hostname, port


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> tuple[str, bool]:
    """At most `limit` bytes of the body, decoded; True if more was coming (the rest is never read:
    leaving the response unread closes its connection instead of buffering it)."""
    data = bytearray()
    truncated = False
    async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):
        room = limit - len(data)
        if len(chunk) > room:
            data += chunk[:room]
            truncated = True
            break
        data += chunk
    charset = resp.charset or "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name in Content-Type
        text = data.decode("utf-8", errors="replace")
    return clean_text(text), truncated
