"""Scenario adapter (the `scenarios.Carrier` and `CallHandle` verbs) for the Vonage fake."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.scenarios import (
    CALLER,
    NUMBER,
    PUBLIC_HOST,
    CallHandle,
    RestNetCarrier,
    StreamCallVerbs,
    _try_ws,
)
from tests.fakes.vonage import FakeVonage, FakeVonageCall, FakeVonageRest


@dataclass
class VonageHandle(StreamCallVerbs):
    """A FakeVonage call behind the neutral verbs."""

    call: FakeVonageCall
    rest: FakeVonageRest

    @property
    def call_id(self) -> str:
        return self.call.headers["call_id"]

    async def hangup_from_far_end(self) -> None:
        """The caller hangs up: Vonage closes the websocket and posts `completed` to the event URL."""
        await self.call.remote_end("completed")

    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None:
        """The daemon hung up over REST (PUT /v1/calls/{uuid} hangup) and Vonage closed the socket."""
        uuid = self.call.call_sid
        await self.rest.wait_for_request(
            lambda r: (
                r.method == "PUT" and r.path == f"/v1/calls/{uuid}" and r.body.get("action") == "hangup"
            ),
            timeout=timeout,
        )
        await self.call.wait_closed(timeout=timeout)


class VonageCarrier(RestNetCarrier[FakeVonageRest, FakeVonage]):
    """FakeVonageRest + FakeVonage; the application's private key in a file the config names."""

    name = "vonage"

    def __init__(self) -> None:
        super().__init__(FakeVonageRest(), FakeVonage)
        self._dir = tempfile.TemporaryDirectory(prefix="vonage-key-")
        self.key_path = Path(self._dir.name) / "private.key"
        self.key_path.write_text(self.rest.private_key)

    async def close(self) -> None:
        await super().close()
        self._dir.cleanup()

    def config(self) -> str:
        return (
            f"carrier: {{type: vonage, application_id: {self.rest.application_id}, "
            f"private_key: '{self.key_path}', signature_secret: '{self.rest.signature_secret}', "
            f"base_url: '{self.rest.base_url}', retry_backoff_secs: 0.05}}\n"
        )

    async def inbound_call(self, from_: str = CALLER, to: str = NUMBER) -> CallHandle:
        assert self.net is not None
        call = await self.net.inbound_call(from_, to)
        assert call.webhook_status == 200 and call.endpoint is not None, (call.webhook_status, call.ncco)
        return VonageHandle(call, self.rest)

    async def answer_outbound(self, to: str, answered_by: str = "human") -> CallHandle:
        assert self.net is not None
        seen = sum(1 for c in self.net.calls.values() if c.direction == "outbound")
        resource = await self.rest.wait_for_call(index=seen)
        assert resource.to == to.lstrip("+")
        return VonageHandle(await self.net.answer_outbound(resource), self.rest)

    def dial_request(self) -> dict[str, Any]:
        return [r.body for r in self.rest.requests if r.method == "POST" and r.path == "/v1/calls"][-1]

    async def send_bad_signature(self) -> int:
        assert self.net is not None
        fields = {"uuid": "u-forged", "from": CALLER.lstrip("+"), "to": NUMBER.lstrip("+")}
        url = self.net.public_url("/webhooks/vonage/voice")
        forged = self.net.sign(b"{}", secret="not-the-signature-secret-of-this-account")
        status, _ = await self.net.post_webhook(url, fields, token=forged)
        return status

    async def open_media(self, call_id: str) -> int | None:
        assert self.net is not None
        url = self.net.local_url(f"wss://{PUBLIC_HOST}/ws/vonage/stream/{call_id}?token=guess")
        return await _try_ws(self.net.session, url, {})

    async def wait_transferred(self, handle: CallHandle, timeout: float = 10.0) -> str:
        """Until the daemon replaced the call's NCCO with a phone connect (PUT transfer); the number."""
        assert isinstance(handle, VonageHandle)
        path = f"/v1/calls/{handle.call.call_sid}"
        put = await self.rest.wait_for_request(
            lambda r: r.method == "PUT" and r.path == path and r.body.get("action") == "transfer",
            timeout=timeout,
        )
        await handle.call.wait_closed(timeout=timeout)  # the new NCCO ends the websocket leg
        return str(put.body["destination"]["ncco"][0]["endpoint"][0]["number"])

    def hangup_requests(self, handle: CallHandle) -> int:
        assert isinstance(handle, VonageHandle)
        uuid = handle.call.call_sid
        return sum(1 for r in self.rest.requests if r.method == "PUT" and r.path == f"/v1/calls/{uuid}")
