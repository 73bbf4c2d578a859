"""Media websocket abuse against the real patterd process: a storm of bad frames kills no call, and calls are bounded.

Two daemons (one with Twilio, one with Telnyx; each also serves the browser softphone) and the fake
Realtime engine. 10,000 seeded-random bad frames — deep JSON, bad base64, non-ASCII payloads, binary
frames, wrong types, unknown events, second `start`s, frames over the size cap — go to live calls on all
three media sockets; every call must still be in progress and still carry audio both ways afterwards, end
normally when the caller hangs up, and the daemons must have counted exactly the bad frames. Then: a
silent media socket ends its call (`server.media_idle_timeout_secs`), a call to an agent with a short
`max_duration_secs` is ended as completed, and calls over `server.max_calls` are refused the carrier's way.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import pytest_asyncio

from tests.daemon_process import DaemonProcess, run_daemon
from tests.e2e.scenarios import (
    CALLER,
    ENGINE_KEY,
    NUMBER,
    PUBLIC_HOST,
    Api,
    CallHandle,
    TelnyxCarrier,
    TelnyxHandle,
    TwilioCarrier,
    TwilioHandle,
    engine_server,
    wait_record,
)
from tests.fakes.openai_realtime import FakeRealtimeServer, Say
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

FRAMES = 10_000
CALLS_PER_SOCKET = 2  # per carrier socket and daemon: 2 Twilio, 2 Telnyx, 2 + 2 softphone calls
SHORT_NUMBER = "+15550002222"  # the agent with a short max_duration_secs
MAX_CALLS = 5
IDLE_SECS = 8.0  # generous: the fake callers share a loaded machine, and a stall must not look like silence
MAX_DURATION_SECS = 1.5
SILENCE = b"\xff" * 160
FRAME_SECS = 0.02


def config(carrier: TwilioCarrier | TelnyxCarrier, engine_url: str, records: Path) -> str:
    engine = (
        f"{{type: openai_realtime, base_url: '{engine_url}', api_key: {ENGINE_KEY}, voice: alloy, "
        "max_retries: 3, retry_backoff_secs: 0.1, connect_timeout_secs: 10}"
    )
    return carrier.config() + (
        f'phone_number: "{NUMBER}"\n'
        f"webhook_url: {PUBLIC_HOST}\n"
        f"persist: {records}\n"
        f"server: {{drain_timeout_secs: 2, max_calls: {MAX_CALLS}, media_idle_timeout_secs: {IDLE_SECS}}}\n"
        "agents:\n"
        f"  - {{name: desk, engine: {engine}, first_message: 'Hello, this is the desk.'}}\n"
        f'  - {{name: brief, phone_number: "{SHORT_NUMBER}", engine: {engine}, '
        f"first_message: 'Hello.', max_duration_secs: {MAX_DURATION_SECS}}}\n"
    )


# ====================================================================== the browser softphone, scripted


class Softphone:
    """What the dashboard's softphone does over HTTP and WS /ws/local/{id}: start, 20 ms frames, marks echoed."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url
        self.call_id = ""
        self.heard = bytearray()
        self.closed = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._outgoing: list[bytes] = []
        self._sent_all = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def dial(self, to: str = NUMBER) -> int:
        """POST /webhooks/local/voice; the HTTP status (201 when the call was admitted)."""
        async with self.session.post(
            f"{self.base_url}/webhooks/local/voice", json={"to": to}, headers={"X-Patterd-CSRF": "1"}
        ) as resp:
            body = await resp.json()
            if resp.status == 201:
                self.call_id = body["call_id"]
            return resp.status

    async def connect(self, *, continuous: bool = True) -> None:
        """Open the media socket, send `start`, then one frame every 20 ms (silence too, if continuous)."""
        url = self.base_url.replace("http://", "ws://") + f"/ws/local/{self.call_id}"
        self._ws = await self.session.ws_connect(url)
        await self._ws.send_str(json.dumps({"event": "start", "start": {"format": "mulaw/8000"}}))
        self._tasks = [asyncio.create_task(self._reader()), asyncio.create_task(self._pump(continuous))]

    async def _pump(self, continuous: bool) -> None:
        loop = asyncio.get_running_loop()
        start, tick = loop.time(), 0
        while self._ws is not None and not self._ws.closed:
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * FRAME_SECS - loop.time()))  # real-time pacing
            if self._outgoing:
                frame = self._outgoing.pop(0)
                if not self._outgoing:
                    self._sent_all.set()
            elif continuous:
                frame = SILENCE
            else:
                continue
            payload = base64.b64encode(frame).decode()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str(json.dumps({"event": "media", "media": {"payload": payload}}))

    async def _reader(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("event") == "media":
                self.heard += base64.b64decode(data["media"]["payload"])
            elif data.get("event") == "mark":
                await self._ws.send_str(json.dumps({"event": "mark", "mark": data["mark"]}))
            self._changed.set()
        self.closed.set()
        self._changed.set()

    async def say(self, ulaw: bytes) -> None:
        self._sent_all.clear()
        self._outgoing += [ulaw[i : i + 160].ljust(160, b"\xff") for i in range(0, len(ulaw), 160)]
        await asyncio.wait_for(self._sent_all.wait(), 30)

    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.heard) < n_bytes:
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Until the daemon closed the media socket."""
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def send_raw(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(data)

    async def hangup(self) -> None:
        """The caller hangs up: `stop`, then the socket closes."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_str(json.dumps({"event": "stop"}))
            await self._ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# ====================================================================== one neutral leg per live call


class Leg(Protocol):
    label: str  # the carrier label in metrics: twilio | telnyx | local
    daemon: Rigged

    @property
    def call_id(self) -> str: ...
    async def send_raw(self, text: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def say(self, ulaw: bytes) -> None: ...
    def heard_bytes(self) -> int: ...
    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None: ...
    async def hangup(self) -> None: ...


@dataclass
class CarrierLeg:
    """A Twilio or Telnyx call (scenario handle) as a Leg."""

    label: str
    daemon: Rigged
    handle: CallHandle

    @property
    def call_id(self) -> str:
        return self.handle.call_id

    async def send_raw(self, text: str) -> None:
        await self.handle.send_raw(text)

    async def send_bytes(self, data: bytes) -> None:
        ws = self.handle.call._ws if isinstance(self.handle, TwilioHandle | TelnyxHandle) else None
        assert ws is not None
        await ws.send_bytes(data)

    async def say(self, ulaw: bytes) -> None:
        await self.handle.say(ulaw)

    def heard_bytes(self) -> int:
        return self.handle.heard_bytes()

    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None:
        await self.handle.wait_heard(n_bytes, timeout)

    async def hangup(self) -> None:
        await self.handle.hangup_from_far_end()


@dataclass
class SoftphoneLeg:
    """A softphone call as a Leg."""

    daemon: Rigged
    phone: Softphone
    label: str = "local"

    @property
    def call_id(self) -> str:
        return self.phone.call_id

    async def send_raw(self, text: str) -> None:
        await self.phone.send_raw(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.phone.send_bytes(data)

    async def say(self, ulaw: bytes) -> None:
        await self.phone.say(ulaw)

    def heard_bytes(self) -> int:
        return len(self.phone.heard)

    async def wait_heard(self, n_bytes: int, timeout: float = 10.0) -> None:
        await self.phone.wait_heard(n_bytes, timeout)

    async def hangup(self) -> None:
        await self.phone.hangup()


# ====================================================================== the rig: engine, carriers, two daemons


@dataclass
class Rigged:
    """One daemon and the carrier fake in front of it."""

    carrier: TwilioCarrier | TelnyxCarrier
    process: DaemonProcess
    api: Api
    records: Path
    http: aiohttp.ClientSession

    async def carrier_call(self, to: str = NUMBER) -> CarrierLeg:
        handle = await self.carrier.inbound_call(CALLER, to)
        return CarrierLeg(self.carrier.name, self, handle)

    async def softphone_call(self, to: str = NUMBER, *, continuous: bool = True) -> SoftphoneLeg:
        phone = Softphone(self.http, self.process.base_url)
        assert await phone.dial(to) == 201
        await phone.connect(continuous=continuous)
        return SoftphoneLeg(self, phone)

    async def dropped(self, label: str) -> dict[str, float]:
        """patterd_media_frames_dropped_total by reason for one carrier label."""
        _, text = await self.api.request("GET", "/metrics")
        out: dict[str, float] = {}
        for line in str(text).splitlines():
            if line.startswith("patterd_media_frames_dropped_total{") and f'carrier="{label}"' in line:
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                out[reason] = float(line.rsplit(" ", 1)[1])
        return out

    async def metadata(self, call_id: str) -> dict[str, Any]:
        status, body = await self.api.request("GET", f"/api/v1/calls/{call_id}")
        assert status == 200, body
        return dict(body["metadata"])

    async def live_calls(self) -> int:
        _, body = await self.api.request("GET", "/api/v1/status")
        return len(body["live_calls"])


@dataclass
class Rig:
    engine: FakeRealtimeServer
    daemons: list[Rigged] = field(default_factory=list)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with contextlib.AsyncExitStack() as stack:
        engine = await stack.enter_async_context(engine_server())
        engine.replies[:] = [Say("Still here.")] * 200
        http = await stack.enter_async_context(aiohttp.ClientSession())
        rig = Rig(engine)
        for carrier in (TwilioCarrier(), TelnyxCarrier()):
            await carrier.start()
            stack.push_async_callback(carrier.close)
            tmp = tmp_path_factory.mktemp(carrier.name)
            path = tmp / "patter.yaml"
            path.write_text(config(carrier, engine.url, tmp / "records"))
            cm = run_daemon(path)
            process = await asyncio.to_thread(cm.__enter__)  # the daemon may call the fakes while starting
            stack.push_async_callback(asyncio.to_thread, cm.__exit__, None, None, None)
            await carrier.attach(process.base_url)
            api = await stack.enter_async_context(Api(process.base_url))
            rig.daemons.append(Rigged(carrier, process, api, tmp / "records", http))
        yield rig


# ====================================================================== the storm


@dataclass(frozen=True)
class Frame:
    """One frame to send: text or binary, and whether every carrier's decoder must drop and count it."""

    data: str | bytes
    bad: bool = True


def _deep(rng: random.Random) -> str:
    depth = rng.choice((64, 900, 5_000, 100_000))
    inner = "[" * depth + "]" * depth
    return rng.choice((inner, '{"event": "media", "media": ' + inner + "}"))


def storm(rng: random.Random, n: int) -> list[Frame]:
    """`n` frames: bad ones every decoder refuses, and a few odd-but-valid ones (never counted)."""
    garbage = "".join(rng.choice("!@#$%^&*()<>?{}[];:") for _ in range(12))
    makers: list[Callable[[], Frame]] = [
        lambda: Frame(_deep(rng)),
        lambda: Frame("{" + garbage[: rng.randrange(1, 12)]),  # not JSON
        lambda: Frame(rng.choice(("5", '"media"', "null", "[1, 2]", "true"))),  # JSON, not an object
        lambda: Frame(
            json.dumps({"event": "media", "media": {"payload": rng.choice(("%%%", "AAA", "=AAA", "A"))}})
        ),
        lambda: Frame('{"event": "media", "media": {"payload": "AAA\u00e9AAA"}}'),  # non-ASCII, raw
        lambda: Frame('{"event": "media", "media": {"payload": "\\u00e9AAA"}}'),  # non-ASCII, escaped
        lambda: Frame(
            json.dumps({"event": "media", "media": {"payload": rng.choice((None, 5, [], {}, True))}})
        ),
        lambda: Frame(json.dumps({"event": "media", "media": rng.choice((5, "x", None, [], True))})),
        lambda: Frame(json.dumps({"event": "media"})),
        lambda: Frame(json.dumps({"event": rng.choice((5, None, [], {"a": 1}, "teleport", "MEDIA", ""))})),
        lambda: Frame(json.dumps({"no_event": 1})),
        lambda: Frame('{"event": "\\ud800"}'),  # a lone surrogate
        lambda: Frame(
            json.dumps({"event": "dtmf", "dtmf": {"digit": rng.choice(("12", "x", "", 7, None, "ǅ"))}})
        ),
        lambda: Frame(json.dumps({"event": "dtmf", "dtmf": rng.choice((5, "1", None))})),
        lambda: Frame(json.dumps({"event": "mark", "mark": rng.choice((5, "m1", None, []))})),
        lambda: Frame(
            json.dumps({"event": "start", "start": {"streamSid": "MZ-other", "callSid": "CA-other"}})
        ),
        lambda: Frame(json.dumps({"event": "start", "start": rng.choice((5, None, []))})),
        lambda: Frame(b"\xff\xfe" + rng.randbytes(rng.randrange(0, 300))),  # binary, not UTF-8
        lambda: Frame(
            '{"event": "media", "media": {"payload": "' + "A" * rng.randrange(70_000, 900_000) + '"}}'
        ),
        # valid, if odd: odd-length audio, marks we never sent, `connected` again
        lambda: Frame(
            json.dumps(
                {
                    "event": "media",
                    "media": {"payload": base64.b64encode(b"\xff" * rng.choice((1, 3, 161))).decode()},
                }
            ),
            bad=False,
        ),
        lambda: Frame(
            json.dumps({"event": "mark", "mark": {"name": f"never-sent-{rng.randrange(1000)}"}}), bad=False
        ),
        lambda: Frame(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}), bad=False),
    ]
    # Huge frames cost bandwidth, not insight: one in a hundred.
    weights = [6, 6, 4, 6, 4, 4, 5, 5, 3, 6, 3, 2, 5, 3, 4, 3, 3, 6, 1, 4, 3, 2]
    assert len(weights) == len(makers)
    return [rng.choices(makers, weights)[0]() for _ in range(n)]


async def blast(leg: Leg, frames: list[Frame]) -> None:
    for i, frame in enumerate(frames):
        if isinstance(frame.data, bytes):
            await leg.send_bytes(frame.data)
        else:
            await leg.send_raw(frame.data)
        if i % 50 == 0:
            await asyncio.sleep(0)  # let the fake callers' 20 ms frames and the engine fake run too


async def _gather(items: list[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*items))


async def test_a_storm_of_bad_frames_kills_no_call(rig: Rig) -> None:
    started = time.monotonic()
    legs: list[Leg] = []
    for daemon in rig.daemons:
        for _ in range(CALLS_PER_SOCKET):
            legs.append(await daemon.carrier_call())
            legs.append(await daemon.softphone_call())
    await _gather([leg.wait_heard(1600, timeout=15) for leg in legs])  # the greeting got through
    before = {(id(leg.daemon), leg.label): await leg.daemon.dropped(leg.label) for leg in legs}

    rng = random.Random(20261129)
    frames = storm(rng, FRAMES)
    share = len(frames) // len(legs)
    plans = [
        frames[i * share : (i + 1) * share if i < len(legs) - 1 else len(frames)] for i in range(len(legs))
    ]
    await _gather([blast(leg, plan) for leg, plan in zip(legs, plans, strict=True)])

    # Every bad frame was counted, on its daemon and carrier, and nothing else was.
    expected: dict[tuple[int, str], int] = {}
    for leg, plan in zip(legs, plans, strict=True):
        key = (id(leg.daemon), leg.label)
        expected[key] = expected.get(key, 0) + sum(f.bad for f in plan)
    for leg in legs:
        key = (id(leg.daemon), leg.label)
        deadline = time.monotonic() + 10
        while True:
            counted = sum((await leg.daemon.dropped(leg.label)).values()) - sum(before[key].values())
            if counted >= expected[key] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # polling another process's metrics
        assert counted == expected[key], (leg.label, await leg.daemon.dropped(leg.label))
    reasons = set()
    for daemon in rig.daemons:
        for label in ("twilio", "telnyx", "local"):
            reasons |= set((await daemon.dropped(label)).keys())
    assert {
        "not_json",
        "bad_shape",
        "bad_audio",
        "bad_dtmf",
        "unknown_event",
        "duplicate_start",
        "too_large",
    } <= reasons

    # No call died: all still in progress, and still carrying audio both ways (speech in → a reply out).
    for leg in legs:
        assert (await leg.daemon.metadata(leg.call_id))["status"] == "in_progress", leg.label
    speech = spoken_ulaw("Are you still there?")
    heard = [leg.heard_bytes() for leg in legs]
    await _gather([leg.say(speech) for leg in legs])
    await _gather([leg.wait_heard(h + 4000, timeout=20) for leg, h in zip(legs, heard, strict=True)])

    # ... and each ends normally when its caller hangs up.
    await _gather([leg.hangup() for leg in legs])
    for leg in legs:
        directory = await wait_record(leg.daemon.records, leg.call_id, "completed")
        meta = json.loads((directory / "metadata.json").read_text())
        assert meta["error"] in (None, ""), meta["error"]
    assert time.monotonic() - started < 60


# ====================================================================== bounded calls


async def test_a_silent_media_socket_ends_its_call(rig: Rig) -> None:
    """No frame at all for media_idle_timeout_secs: the call fails with a clear error and is hung up."""
    twilio, telnyx = rig.daemons
    assert isinstance(twilio.carrier, TwilioCarrier) and isinstance(telnyx.carrier, TelnyxCarrier)
    assert twilio.carrier.net is not None
    silent_twilio = TwilioHandle(
        await twilio.carrier.net.inbound_call(CALLER, NUMBER, continuous=False), twilio.carrier.rest
    )
    telnyx.carrier.fake.trailing_silence = (
        False  # read by every Telnyx stream of the fake: no call but this one
    )
    silent_telnyx = await telnyx.carrier.inbound_call(CALLER, NUMBER)
    phone = await twilio.softphone_call(continuous=False)
    cases: list[tuple[Rigged, str, Callable[[], Awaitable[None]]]] = [
        (twilio, silent_twilio.call_id, silent_twilio.wait_hung_up_by_daemon),
        (telnyx, silent_telnyx.call_id, silent_telnyx.wait_hung_up_by_daemon),
        (twilio, phone.call_id, phone.phone.wait_closed),
    ]
    for daemon, call_id, hung_up in cases:
        directory = await wait_record(daemon.records, call_id, "failed", timeout=IDLE_SECS + 10)
        meta = json.loads((directory / "metadata.json").read_text())
        assert "no media frame from" in meta["error"] and f"for {IDLE_SECS:g} s" in meta["error"], meta[
            "error"
        ]
        await hung_up()
    telnyx.carrier.fake.trailing_silence = True
    await phone.hangup()


async def test_a_call_is_ended_at_its_agents_max_duration(rig: Rig) -> None:
    twilio = rig.daemons[0]
    legs: list[Leg] = [await twilio.carrier_call(SHORT_NUMBER), await twilio.softphone_call(SHORT_NUMBER)]
    started = time.monotonic()
    for leg in legs:
        directory = await wait_record(
            twilio.records, leg.call_id, "completed", timeout=MAX_DURATION_SECS + 10
        )
        events = [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]
        ended = [e for e in events if e["type"] == "call_ended"]
        assert ended and ended[-1]["data"]["reason"] == "max_duration", ended
    assert time.monotonic() - started >= MAX_DURATION_SECS
    assert isinstance(legs[0], CarrierLeg) and isinstance(legs[0].handle, TwilioHandle)
    await legs[0].handle.wait_hung_up_by_daemon()  # ended by us: hung up through the carrier
    for leg in legs:
        with contextlib.suppress(Exception):
            await leg.hangup()


async def test_calls_over_max_calls_are_refused_the_carriers_way(rig: Rig) -> None:
    for daemon in rig.daemons:
        deadline = time.monotonic() + 10
        while await daemon.live_calls() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the previous tests' calls are still being closed
        assert await daemon.live_calls() == 0
    twilio, telnyx = rig.daemons
    assert isinstance(twilio.carrier, TwilioCarrier) and isinstance(telnyx.carrier, TelnyxCarrier)
    # Ringing calls count: fill the Twilio daemon with softphone calls that never connect their media.
    phones = [Softphone(twilio.http, twilio.process.base_url) for _ in range(MAX_CALLS)]
    assert [await p.dial() for p in phones] == [201] * MAX_CALLS
    assert await Softphone(twilio.http, twilio.process.base_url).dial() == 503
    assert twilio.carrier.net is not None
    refused = await twilio.carrier.net.inbound_call(CALLER, NUMBER)
    assert refused.twiml is not None and refused.twiml.rejected, refused.twiml
    status, body = await twilio.api.request("POST", "/api/v1/calls", {"to": "+15557654321"})
    assert status == 503, body
    text = str((await twilio.api.request("GET", "/metrics"))[1])
    assert 'patterd_calls_refused_total{carrier="local",reason="max_calls"} 1.0' in text
    assert 'patterd_calls_refused_total{carrier="twilio",reason="max_calls"} 2.0' in text
    for phone in phones:
        assert (await twilio.api.request("POST", f"/api/v1/calls/{phone.call_id}/hangup"))[0] == 202
    again = Softphone(twilio.http, twilio.process.base_url)
    assert await again.dial() == 201  # room again
    assert (await twilio.api.request("POST", f"/api/v1/calls/{again.call_id}/hangup"))[0] == 202

    # Telnyx: a call.initiated over the limit is rejected with a Call Control command.
    phones = [Softphone(telnyx.http, telnyx.process.base_url) for _ in range(MAX_CALLS)]
    assert [await p.dial() for p in phones] == [201] * MAX_CALLS
    call = await telnyx.carrier.fake.place_call(CALLER, NUMBER)
    await telnyx.carrier.fake.wait_command("reject", call.call_control_id)
    text = str((await telnyx.api.request("GET", "/metrics"))[1])
    assert 'patterd_calls_refused_total{carrier="telnyx",reason="max_calls"} 1.0' in text
    for phone in phones:
        assert (await telnyx.api.request("POST", f"/api/v1/calls/{phone.call_id}/hangup"))[0] == 202
