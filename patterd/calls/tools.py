"""The tools an agent can call: end_call, transfer_call and webhook tools, as schemas and as actions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from patterd.providers.kinds import ToolSchema


@dataclass(frozen=True)
class WebhookTool:
    """A tool that POSTs its JSON arguments to a URL and returns the response body to the model."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    url: str
    timeout_secs: float = 5.0
    headers: Mapping[str, str] | None = None


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
    http: aiohttp.ClientSession | None,
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


async def _call_webhook(
    hook: WebhookTool, arguments: Mapping[str, Any], http: aiohttp.ClientSession | None
) -> str:
    if http is None:
        raise ToolFailure("webhook tools are unavailable: no HTTP session")
    try:
        async with asyncio.timeout(hook.timeout_secs):
            async with http.post(hook.url, json=dict(arguments), headers=dict(hook.headers or {})) as resp:
                body = await resp.text()
                if resp.status >= 400:
                    raise ToolFailure(f"{hook.url} answered HTTP {resp.status}: {body[:200]}")
                return body
    except TimeoutError as exc:
        raise ToolFailure(f"{hook.url} did not answer within {hook.timeout_secs:g} s") from exc
    except aiohttp.ClientError as exc:
        raise ToolFailure(f"{hook.url} failed: {type(exc).__name__}: {exc}") from exc
