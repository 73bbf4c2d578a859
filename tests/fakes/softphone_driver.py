"""The contract suite's driver for `carrier.local`: a browser softphone on the daemon's loopback.

The softphone's wire (patterd/protocols/local.py): POST /webhooks/local/voice → {call_id, media_path};
on the socket `start`, `media` {media: {payload}}, `dtmf` {dtmf: {digit}}, `mark` echoes, `stop`; the
daemon sends `media`, `mark` {mark: {name}} and `clear`. It places no calls, signs nothing, transfers
nothing and is hung up by closing its socket.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.sample_carrier import FakeSampleNet, SampleCall


class SoftphoneCall(SampleCall):
    """The sample fake's real-time caller, speaking the softphone's JSON (and reading its captions)."""

    def __init__(self, net: FakeSampleNet, carrier_id: str, call_id: str) -> None:
        super().__init__(net, carrier_id, call_id)
        self.captions: list[tuple[str, str]] = []

    def start_message(self) -> dict[str, Any]:
        return {"event": "start"}

    def audio_message(self, payload: str) -> dict[str, Any]:
        return {"event": "media", "media": {"payload": payload}}

    def played_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "mark": {"name": name}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "dtmf": {"digit": digit}}

    def stop_message(self) -> dict[str, Any]:
        return {"event": "stop"}

    def parse(self, data: dict[str, Any]) -> tuple[str, str]:
        kind = str(data.get("event"))
        if kind == "media":
            return "audio", str(data.get("media", {}).get("payload", ""))
        if (
            kind == "transcript"
            and data.get("role") in ("user", "assistant")
            and isinstance(data.get("text"), str)
        ):
            self.captions.append((str(data["role"]), data["text"]))  # the page's live captions
            return "caption", ""
        return kind, str(data.get("mark", {}).get("name", "")) if kind == "mark" else ""

    async def hangup_from_far_end(self) -> None:
        """The browser hangs up: `stop`, then the socket closed (there is no status callback)."""
        await self.close()

    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None:
        await self.net.until(self.closed.is_set, timeout, "the daemon to close the softphone's socket")


class SoftphoneDriver:
    """`carrier.local` from the browser's side."""

    name = "local"

    def __init__(self) -> None:
        self.net = FakeSampleNet()  # its HTTP session and waits; its REST API goes unused

    async def start(self) -> None:
        await self.net.start()

    async def close(self) -> None:
        await self.net.close()

    def config(self) -> str:
        return "carrier: {type: local}\n"

    async def attach(self, daemon_url: str) -> None:
        self.net.daemon_url = daemon_url

    async def detach(self) -> None:
        for call in list(self.net.calls.values()):
            await call.close()

    async def inbound_call(self) -> SoftphoneCall:
        async with self.net.session.post(self.net.daemon_url + "/webhooks/local/voice", json={}) as resp:
            assert resp.status == 201, await resp.text()
            answer = await resp.json()
        call = SoftphoneCall(self.net, f"local-{len(self.net.calls)}", str(answer["call_id"]))
        self.net.calls[call.carrier_id] = call
        await call.connect(self.net.daemon_url.replace("http://", "ws://") + answer["media_path"])
        return call

    async def answer_outbound(self, to: str, answered_by: str) -> SoftphoneCall:
        raise AssertionError("the softphone places no calls (the suite skips outbound for it)")

    def dial_request(self) -> dict[str, Any]:
        return {}

    async def send_bad_signature(self) -> int:
        raise AssertionError("the softphone signs nothing (the suite skips signatures for it)")

    async def open_media(self, call_id: str) -> int | None:
        raise AssertionError("the softphone signs nothing (the suite skips signatures for it)")

    def hangup_requests(self, call: object) -> int:
        return 0
