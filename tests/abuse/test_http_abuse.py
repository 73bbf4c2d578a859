"""The HTTP edge under abuse, against the real daemon process over loopback (issue 12, web layer).

- 10,000 hostile bodies (tests/abuse/bad_bodies.py, seeded) to the Twilio, Telnyx and softphone webhooks and
  `POST /api/v1/calls`, half of the carrier ones correctly signed so they reach the parsers: 0 answers 5xx,
  0 tracebacks in the daemon's log.
- Six concurrent 200 MB uploads (streamed chunked, and declared by Content-Length): each answered 413 early,
  the daemon's RSS (from /proc) grows at most 50 MB.
- 1,000 slow clients trickling /login bodies: /healthz and a new call still succeed while they hold their
  connections, and the body read timeout answers them 408.
- SSE subscribers that go away leave no traceback; probes are open with a token set; wrong tokens are
  throttled per address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from nacl.signing import SigningKey

from patterd.protocols import jsontext
from patterd.protocols import twilio as twilio_proto
from patterd.web.limits import BODY_READ_TIMEOUT_SECS, WEBHOOK_MAX_BYTES
from tests.abuse.bad_bodies import BadBodies, BadBody
from tests.daemon_process import DaemonProcess, run_daemon
from tests.web import rawhttp

TOKEN = "abuse-token-0123456789"
TWILIO_TOKEN = "twilio-auth-token-abcdef"
PUBLIC_HOST = "gw.example.com"
NUMBER = "+15550001234"
AGENT = """agents:
  - name: front-desk
    first_message: Hello.
    stt: {type: offline}
    llm:
      type: script
      fallback: Sorry?
      intents:
        - {name: bye, examples: [bye], reply: Bye!, tool: {name: end_call}}
    tts: {type: offline}
    tools: [{type: end_call}]
"""
CLOSED_PORT_URL = (
    "http://127.0.0.1:9"  # the carriers' REST APIs are never needed here (discard port: refused)
)
MB = 1024 * 1024
TELNYX_EVENTS = [
    "call.initiated",
    "call.answered",
    "call.hangup",
    "call.dtmf.received",
    "streaming.started",
    "streaming.failed",
    "call.recording.saved",
    "call.machine.detection.ended",
    "call.bogus",
]


@dataclass
class Tally:
    """What the fuzz got back."""

    statuses: Counter[int]
    by_target: dict[str, Counter[int]]
    failures: list[str]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_secs(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tracebacks(daemon: DaemonProcess) -> list[str]:
    """Log lines that carry a traceback (structlog puts it under `exception`) or an unhandled error."""
    bad = []
    for line in daemon.log_lines:
        if "Traceback" in line or '"exception"' in line:
            bad.append(line[:2000])
    return bad


@pytest.fixture(autouse=True, scope="module")
def enough_descriptors() -> None:
    """This process opens ~1,000 sockets at once (the slow clients); the daemon raises its own limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (soft < hard and soft < 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))


@pytest.fixture(scope="module")
def twilio_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("twilio")
    config = root / "patter.yaml"
    config.write_text(
        f"carrier: {{type: twilio, account_sid: AC{'0' * 32}, auth_token: {TWILIO_TOKEN}, "
        f"base_url: '{CLOSED_PORT_URL}'}}\n"
        f"phone_number: '{NUMBER}'\nwebhook_url: {PUBLIC_HOST}\npersist: {root / 'records'}\n"
        f"server: {{dashboard_token: {TOKEN}, drain_timeout_secs: 1}}\n" + AGENT
    )
    # Started with the common soft limit of 1,024 open files (as the hostile tester's daemon was): it must
    # raise its own limit, or the thousand slow clients below would exhaust it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        starting = run_daemon(config, token=TOKEN)
        daemon = starting.__enter__()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield daemon
    finally:
        starting.__exit__(None, None, None)


@pytest.fixture(scope="module")
def telnyx_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, SigningKey]]:
    root = tmp_path_factory.mktemp("telnyx")
    key = SigningKey(bytes(range(32)))
    public = base64.b64encode(bytes(key.verify_key)).decode()
    config = root / "patter.yaml"
    config.write_text(
        f"carrier: {{type: telnyx, api_key: KEYabc, connection_id: '123', public_key: '{public}', "
        f"base_url: '{CLOSED_PORT_URL}', max_attempts: 1}}\n"
        f"phone_number: '{NUMBER}'\nwebhook_url: {PUBLIC_HOST}\npersist: {root / 'records'}\n"
        "server: {drain_timeout_secs: 1}\n" + AGENT
    )
    with run_daemon(config) as daemon:
        yield daemon, key


# ---------------------------------------------------------------------------------------------- requests


def twilio_signed(path: str, bad: BadBody) -> tuple[str, dict[str, str]]:
    """The path (with bodySHA256 for JSON) and headers Twilio would send for this body, validly signed."""
    if bad.content_type.startswith("application/json"):
        text = bad.body.decode("utf-8", "replace")
        path = f"{path}?{urlencode({'bodySHA256': hashlib.sha256(text.encode()).hexdigest()})}"
        signature = twilio_proto.compute_signature(TWILIO_TOKEN, f"https://{PUBLIC_HOST}{path}", None)
    else:
        from urllib.parse import parse_qsl

        fields = parse_qsl(bad.body.decode("utf-8", "replace"), keep_blank_values=True)
        signature = twilio_proto.compute_signature(TWILIO_TOKEN, f"https://{PUBLIC_HOST}{path}", fields)
    return path, {twilio_proto.SIGNATURE_HEADER: signature}


def no_call_sid(bodies: BadBodies) -> object:
    """Structured fuzz for Twilio: anything but a CallSid (that would admit a real call)."""
    value = bodies.any_value(3)
    if isinstance(value, dict):
        value.pop("CallSid", None)
    return value


def api_invalid(bodies: BadBodies) -> object:
    """Structured fuzz for POST /api/v1/calls: always invalid (a valid one would dial the carrier)."""
    value = bodies.any_value(3)
    if isinstance(value, dict):
        value["\ud800extra"] = bodies.any_value(1)  # extra keys are refused
    return value


def softphone_accepts(body: bytes) -> bool:
    """Whether the softphone webhook would start a call for this body (a JSON object with a string `to`)."""
    if len(body) > WEBHOOK_MAX_BYTES:
        return False
    try:
        value = jsontext.loads(body) if body.strip() else {}
    except jsontext.JSONError:
        return False
    return isinstance(value, dict) and isinstance(value.get("to") or "", str)


def local_invalid(bodies: BadBodies) -> object:
    value = bodies.any_value(3)
    if isinstance(value, dict):
        value["to"] = bodies.rng.choice([5, [], {}, True, 1.5])  # `to` of a wrong type: refused
    return value


def telnyx_envelope(bodies: BadBodies) -> object:
    rng = bodies.rng
    payload = bodies.any_value(2)
    if isinstance(payload, dict):
        payload.pop("direction", None)  # never an incoming call: that would answer through the REST API
    data = {"event_type": rng.choice(TELNYX_EVENTS), "id": bodies.any_value(0), "payload": payload}
    return {"data": data} if rng.random() < 0.8 else data


async def fuzz(
    session: aiohttp.ClientSession,
    base_url: str,
    plan: list[tuple[str, str, bytes, dict[str, str]]],
    concurrency: int = 24,
) -> Tally:
    """Send every (target, path, body, headers) with `concurrency` in flight; tally the statuses."""
    tally = Tally(Counter(), {}, [])
    queue: asyncio.Queue[tuple[str, str, bytes, dict[str, str]]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            target, path, body, headers = queue.get_nowait()
            try:
                async with session.post(base_url + path, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except aiohttp.ClientError as exc:
                tally.failures.append(f"{target} {path}: {type(exc).__name__}: {exc}")
                continue
            tally.statuses[status] += 1
            tally.by_target.setdefault(target, Counter())[status] += 1
            if status >= 500:
                tally.failures.append(f"{target} {path} → {status}: {body[:200]!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


# ---------------------------------------------------------------------------------------------- tests


async def test_ten_thousand_bad_bodies_no_5xx_no_traceback(
    twilio_daemon: DaemonProcess, telnyx_daemon: tuple[DaemonProcess, SigningKey]
) -> None:
    telnyx, key = telnyx_daemon
    twilio_plan: list[tuple[str, str, bytes, dict[str, str]]] = []
    telnyx_plan: list[tuple[str, str, bytes, dict[str, str]]] = []
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    twilio_bodies: BadBodies = BadBodies(1201, structured=lambda rng: no_call_sid(twilio_bodies))
    for n in range(3000):
        bad = twilio_bodies.draw()
        hook = ["voice", "status", "recording", "amd"][n % 4]
        path = f"/webhooks/twilio/{hook}"
        headers = {"Content-Type": bad.content_type}
        if n % 2 == 0:  # half signed: they get past the signature to the parsers
            path, signed = twilio_signed(path, bad)
            headers.update(signed)
        twilio_plan.append(("twilio", path, bad.body, headers))

    api_bodies: BadBodies = BadBodies(1202, structured=lambda rng: api_invalid(api_bodies))
    for _ in range(2000):
        bad = api_bodies.draw()
        twilio_plan.append(("api", "/api/v1/calls", bad.body, {"Content-Type": bad.content_type, **bearer}))

    local_bodies: BadBodies = BadBodies(1203, structured=lambda rng: local_invalid(local_bodies))
    accepted = 0
    for _ in range(2000):
        bad = local_bodies.draw()
        while softphone_accepts(bad.body) and accepted >= 20:  # a few clean acceptances; each is a live call
            bad = local_bodies.draw()
        accepted += softphone_accepts(bad.body)
        headers = {"Content-Type": bad.content_type, **bearer}
        twilio_plan.append(("local", "/webhooks/local/voice", bad.body, headers))

    telnyx_bodies: BadBodies = BadBodies(1204, structured=lambda rng: telnyx_envelope(telnyx_bodies))
    for n in range(3000):
        bad = telnyx_bodies.draw()
        headers = {"Content-Type": bad.content_type}
        if n % 2 == 0:
            ts = str(int(time.time()))
            signature = key.sign(ts.encode() + b"|" + bad.body).signature
            headers.update(
                {"telnyx-signature-ed25519": base64.b64encode(signature).decode(), "telnyx-timestamp": ts}
            )
        telnyx_plan.append(("telnyx", "/webhooks/telnyx/voice", bad.body, headers))
    random.Random(7).shuffle(twilio_plan)
    assert len(twilio_plan) + len(telnyx_plan) == 10_000

    started = time.monotonic()
    cpu0 = [cpu_secs(twilio_daemon.proc.pid), cpu_secs(telnyx.proc.pid), time.process_time()]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        results = await asyncio.gather(
            fuzz(session, twilio_daemon.base_url, twilio_plan),
            fuzz(session, telnyx.base_url, telnyx_plan),
        )
    elapsed = time.monotonic() - started
    cpu1 = [cpu_secs(twilio_daemon.proc.pid), cpu_secs(telnyx.proc.pid), time.process_time()]
    cpu = [round(after - before, 1) for before, after in zip(cpu0, cpu1, strict=True)]
    print(
        f"\nCPU seconds: Twilio daemon {cpu[0]}, Telnyx daemon {cpu[1]}, this test process {cpu[2]}", end=""
    )
    statuses = results[0].statuses + results[1].statuses
    by_target = {**results[0].by_target, **results[1].by_target}
    print(f"\n10,000 bad bodies in {elapsed:.1f} s: {dict(sorted(statuses.items()))}")
    for target, counts in sorted(by_target.items()):
        print(f"  {target}: {dict(sorted(counts.items()))}")
    failures = results[0].failures + results[1].failures
    assert failures == [], failures[:20]
    assert sum(statuses.values()) == 10_000
    assert all(status < 500 for status in statuses)
    # The signed half reached the parsers: they answered 400/422 (and 413 for the oversized), not just 403.
    assert by_target["twilio"][400] > 100 and by_target["telnyx"][400] > 500
    assert by_target["api"][400] > 500 and by_target["api"][422] > 100
    assert by_target["local"][400] > 500
    assert tracebacks(twilio_daemon) == [] and tracebacks(telnyx) == []
    assert twilio_daemon.proc.poll() is None and telnyx.proc.poll() is None


async def test_six_200mb_uploads_are_refused_early(twilio_daemon: DaemonProcess) -> None:
    pid = twilio_daemon.proc.pid
    baseline = rss_bytes(pid)
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:  # a measurement, not a wait: /proc every 20 ms while the uploads run
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.02)

    async def declared(path: str) -> int:
        reader, writer = await rawhttp.connect(twilio_daemon.base_url)
        try:
            writer.write(rawhttp.request_head("POST", path, content_length=200 * MB))
            writer.write(b"x" * (256 * 1024))  # the body starts; the answer must not wait for the rest
            await writer.drain()
            return (await rawhttp.read_response(reader)).status
        finally:
            await rawhttp.close(writer)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    # Credentials and the CSRF header ride along so every route goes on to read its body (and hits the limit).
    paths = [
        "/webhooks/twilio/voice",
        "/webhooks/twilio/status",
        "/login",
        "/api/v1/calls",
        "/webhooks/local/voice",
        "/webhooks/twilio/amd",
    ]
    polite = {"Authorization": f"Bearer {TOKEN}", "X-Patterd-CSRF": "1"}
    streamed = await asyncio.gather(
        *(
            rawhttp.upload_until_answered(twilio_daemon.base_url, path, 200 * MB, headers=polite)
            for path in paths
        )
    )
    declared_statuses = await asyncio.gather(*(declared(path) for path in paths))
    elapsed = time.monotonic() - started
    done.set()
    await sampler
    growth = peak - baseline
    sent = [bytes_sent for _, bytes_sent in streamed]
    print(
        f"\n6 × 200 MB streamed + 6 × 200 MB declared: peak RSS growth {growth / MB:.1f} MB "
        f"(baseline {baseline / MB:.1f} MB), body bytes sent before the 413: max {max(sent) / MB:.2f} MB, "
        f"all answered in {elapsed:.2f} s"
    )
    assert [response.status if response else None for response, _ in streamed] == [413] * 6
    assert declared_statuses == [413] * 6
    assert max(sent) < 16 * MB  # answered early: not after 200 MB
    assert growth <= 50 * MB
    assert tracebacks(twilio_daemon) == []


async def test_thousand_slow_clients_do_not_block_probes_or_calls(twilio_daemon: DaemonProcess) -> None:
    base_url = twilio_daemon.base_url
    clients: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def open_slow() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await rawhttp.connect(base_url)
        head = rawhttp.request_head(
            "POST",
            "/login",
            {"X-Patterd-CSRF": "1", "Content-Type": "application/x-www-form-urlencoded"},
            content_length=4000,
        )
        writer.write(head + b"token=")
        await writer.drain()
        return reader, writer

    for _ in range(10):  # in batches: the listening socket's backlog is finite
        clients += await asyncio.gather(*(open_slow() for _ in range(100)))
    assert len(clients) == 1000

    async def trickle() -> None:  # each client keeps sending a byte a second: never idle, never done
        while True:
            for _, writer in clients:
                if not writer.is_closing():
                    writer.write(b"a")
            await asyncio.sleep(1)

    trickler = asyncio.create_task(trickle())
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.get(base_url + "/healthz") as resp:
                assert resp.status == 200
            health_secs = time.monotonic() - started
            params = {
                "CallSid": "CA" + "1" * 32,
                "From": "+15551230001",
                "To": NUMBER,
                "Direction": "inbound",
            }
            signature = twilio_proto.compute_signature(
                TWILIO_TOKEN, f"https://{PUBLIC_HOST}/webhooks/twilio/voice", params
            )
            started = time.monotonic()
            async with session.post(
                base_url + "/webhooks/twilio/voice",
                data=params,
                headers={twilio_proto.SIGNATURE_HEADER: signature},
            ) as resp:
                twiml = await resp.text()
                assert resp.status == 200 and "<Stream" in twiml, twiml
            call_secs = time.monotonic() - started
        held = sum(1 for _, writer in clients if not writer.is_closing())
        # Then the read timeout answers every slow body 408 and closes it.
        started = time.monotonic()
        answers = await asyncio.wait_for(
            asyncio.gather(*(rawhttp.read_response(reader) for reader, _ in clients), return_exceptions=True),
            BODY_READ_TIMEOUT_SECS + 30,
        )
        timeout_secs = time.monotonic() - started
    finally:
        trickler.cancel()
        for _, writer in clients:
            writer.close()
    codes = Counter(a.status if isinstance(a, rawhttp.RawResponse) else type(a).__name__ for a in answers)
    print(
        f"\n1,000 slow clients held: /healthz in {health_secs * 1000:.0f} ms, a new call's TwiML in "
        f"{call_secs * 1000:.0f} ms; their answers {dict(codes)} within {timeout_secs:.1f} s more"
    )
    assert held == 1000
    assert codes == Counter({408: 1000})
    with open(f"/proc/{twilio_daemon.proc.pid}/limits") as limits:  # the daemon raised its soft limit
        soft, hard = next(line for line in limits if line.startswith("Max open files")).split()[3:5]
    assert int(soft) > 1024 and soft == hard, (soft, hard)
    assert tracebacks(twilio_daemon) == []


async def test_feed_disconnects_are_quiet(twilio_daemon: DaemonProcess) -> None:
    before = len(twilio_daemon.log_lines)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        for _ in range(50):
            resp = await session.get(twilio_daemon.base_url + "/api/v1/events")
            assert resp.status == 200
            assert (await resp.content.readline()).startswith(b"retry:")
            resp.close()  # the subscriber goes away mid-stream
        for odd in ("²", "9" * 5000, "-1", "１２"):  # not a usable Last-Event-ID: the feed starts live
            resp = await session.get(
                twilio_daemon.base_url + "/api/v1/events", headers={"Last-Event-ID": odd}
            )
            assert resp.status == 200
            resp.close()
        async with session.get(twilio_daemon.base_url + "/api/v1/status") as status:
            assert status.status == 200
    new_lines = twilio_daemon.log_lines[before:]
    assert [line for line in new_lines if '"level": "error"' in line or "Traceback" in line] == []
    assert tracebacks(twilio_daemon) == []


async def test_probes_open_and_wrong_tokens_throttled(twilio_daemon: DaemonProcess) -> None:
    base_url = twilio_daemon.base_url
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz", "/health"):
            async with session.get(base_url + path) as resp:
                assert resp.status == 200, path
        async with session.get(base_url + "/metrics") as resp:
            assert resp.status == 401
    guesser = aiohttp.TCPConnector(local_addr=("127.0.0.9", 0))
    async with aiohttp.ClientSession(connector=guesser) as session:
        statuses = []
        for n in range(30):
            async with session.get(
                base_url + "/api/v1/status", headers={"Authorization": f"Bearer no-{n}"}
            ) as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        assert statuses[:5] == [401] * 5 and 429 in statuses[5:], statuses
        assert statuses.count(429) >= 20 and retry_after is not None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        async with session.get(base_url + "/api/v1/status") as resp:  # from 127.0.0.1: unaffected
            assert resp.status == 200
            body: Any = await resp.json()
            assert body["state"] == "serving"
    assert TOKEN not in "\n".join(twilio_daemon.log_lines)
    assert json.dumps(TOKEN) not in "\n".join(twilio_daemon.log_lines)
