"""What the carrier contract suite drives: the far end of a carrier (a driver over its fake) and the agent.

A carrier plugin's test fills in a `CarrierSetup`: a running patterd configured with the carrier (its
`api_url`), a `CarrierDriver` over the carrier's fake (the vendor's network as the daemon sees it) and an
`AgentControl` over whatever engine the daemon talks to (it scripts what the agent says). The suite
(`patterd.testing.carrier_suite.CarrierSuite`) then checks the carrier's behaviour through real
sockets only: signed webhooks in, the media socket both ways, REST calls out, and the call record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

# A feature a driver's fake offers; a case that needs a missing one is skipped, saying so.
OUTBOUND = "outbound"  # the carrier places calls (POST /api/v1/calls) and the fake answers them
SIGNATURES = "signatures"  # webhooks are signed: a forged one is refused (403) and counted
TRANSFER = "transfer"  # the carrier transfers a live call over its REST API
REST_HANGUP = "rest_hangup"  # the daemon ends a call over the carrier's REST API (else by closing media)
ALL_FEATURES = frozenset({OUTBOUND, SIGNATURES, TRANSFER, REST_HANGUP})


class CarrierCall(Protocol):
    """One live call as the far end (the caller's phone, through the carrier's fake) sees it."""

    @property
    def call_id(self) -> str:
        """patterd's call id, as the daemon's answer carried it."""
        ...

    async def say(self, ulaw: bytes) -> None:
        """The caller speaks (8 kHz μ-law, sent in real time as the carrier would)."""
        ...

    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None:
        """Until the caller has heard `n_bytes` of agent audio in all (μ-law bytes, played)."""
        ...

    def heard_bytes(self) -> int:
        """Agent audio the caller has heard so far (μ-law bytes)."""
        ...

    def speech_started(self) -> list[float]:
        """Monotonic times the caller started speaking."""
        ...

    def clear_times(self) -> list[float]:
        """Monotonic times the daemon told the carrier to drop buffered audio."""
        ...

    def media_times(self) -> list[float]:
        """Monotonic arrival times of the agent's media messages."""
        ...

    async def wait_for_clear(self, timeout: float = 5.0) -> float:
        """Until the daemon clears the carrier's playback (barge-in); when it did."""
        ...

    async def send_dtmf(self, digit: str) -> None:
        """The caller presses a key."""
        ...

    async def send_raw(self, text: str) -> None:
        """A raw text frame on the media socket (malformed input)."""
        ...

    async def hangup_from_far_end(self) -> None:
        """The caller hangs up, the carrier's way."""
        ...

    async def wait_hung_up_by_daemon(self, timeout: float = 10.0) -> None:
        """Until the daemon has ended the call (its REST hangup, or its side of the media socket)."""
        ...

    def violations(self) -> list[str]:
        """Wire-protocol violations the fake saw from the daemon on this call."""
        ...


class CarrierDriver(Protocol):
    """A carrier's fake network, driven from the far end (what `CarrierSetup.driver` must offer)."""

    name: str  # the carrier's name (`carrier.<name>`), as records and metrics label it

    async def inbound_call(self) -> CarrierCall:
        """A caller dials the configured number: signed webhook → the daemon answers → media socket open."""
        ...

    async def answer_outbound(self, to: str, answered_by: str) -> CarrierCall:
        """The callee of the daemon's latest dial to `to` answers (`answered_by`: human or a machine)."""
        ...

    def dial_request(self) -> Mapping[str, Any]:
        """The body of the last dial the daemon made over the carrier's REST API."""
        ...

    async def send_bad_signature(self) -> int:
        """A webhook with a forged signature; the HTTP status the daemon answered."""
        ...

    async def open_media(self, call_id: str) -> int | None:
        """A media socket for `call_id` without valid credentials: the refusal's status, None if closed."""
        ...

    def hangup_requests(self, call: CarrierCall) -> int:
        """REST hangups the daemon sent for `call`."""
        ...


class TransferringDriver(CarrierDriver, Protocol):
    """A driver whose fake follows REST transfers (feature `transfer`)."""

    async def wait_transferred(self, call: CarrierCall, timeout: float = 10.0) -> str:
        """Until the daemon transferred `call` over REST; the number it was sent to."""
        ...


@dataclass(frozen=True)
class Speak:
    """The agent says `text` (one response)."""

    text: str


@dataclass(frozen=True)
class UseTool:
    """The agent calls tool `name` (one response); the next response follows the tool's output."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


Reply = Speak | UseTool


class AgentControl(Protocol):
    """The agent side under the daemon (a fake engine, or a pipeline's fakes), scripted per call."""

    def script(self, replies: Sequence[Reply], transcripts: Sequence[str] = ()) -> None:
        """The agent's next responses, in order, and what it will hear the caller say in each turn."""
        ...

    def caller_turns(self) -> Sequence[str]:
        """The caller turns the agent has heard so far (transcripts, in order)."""
        ...

    def audio_in(self) -> int:
        """Bytes of caller audio the agent has received so far (any encoding; only growth matters)."""
        ...


@dataclass
class CarrierSetup:
    """The world a carrier runs the suite in: a running daemon with the carrier, its driver, the agent."""

    driver: CarrierDriver
    agent: AgentControl
    api_url: str  # the daemon's base URL (ops API: outbound calls, hangup, transfer, records)
    features: frozenset[str] = ALL_FEATURES  # see OUTBOUND, SIGNATURES, TRANSFER, REST_HANGUP
    outbound_to: str = "+15557654321"
    transfer_to: str = "+15550009999"  # a number the agent's transfer_call tool allows
    api_headers: Mapping[str, str] = field(default_factory=dict)  # e.g. the ops API token


class OpsApi:
    """The daemon's ops API and metrics over aiohttp (the fakes share this event loop: nothing blocks)."""

    def __init__(self, base_url: str, headers: Mapping[str, str]) -> None:
        self.base_url = base_url
        self._headers = dict(headers)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request; the status and the JSON body (or the text of a non-JSON one)."""
        async with (
            aiohttp.ClientSession(headers=self._headers) as session,
            session.request(method, self.base_url + path, json=body) as resp,
        ):
            if "json" in resp.headers.get("content-type", ""):
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def metric(self, name: str, match: Callable[[str], bool]) -> float:
        """The sum of a Prometheus metric's samples whose line satisfies `match`."""
        _, text = await self.request("GET", "/metrics")
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{") and match(line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def wait_call(
        self, call_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """GET /api/v1/calls/{id} until `predicate(body)` holds (the record is written off the loop)."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            status, body = await self.request("GET", f"/api/v1/calls/{call_id}")
            if status == 200 and isinstance(body, dict) and predicate(body):
                return body
            await asyncio.sleep(0.05)  # polling state another process holds
        raise AssertionError(f"call {call_id}: timed out waiting for {what}; last: {body!r:.1500}")
