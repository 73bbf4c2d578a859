"""`patterd simulate`: one call in-process against an agent, with a synthetic caller as the carrier leg."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import aiohttp

from patterd.calls.agent import agent_runtime
from patterd.calls.session import CallSpec
from patterd.calls.switchboard import Switchboard, new_call_id
from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.config import Config
from patterd.errors import PatterdError
from patterd.graph import build_graph
from patterd.plugins import Registry
from patterd.protocols.audio import FRAME_BYTES, FrameSplitter, silence_ulaw
from patterd.protocols.events import (
    TURN_STAGES,
    CallEnded,
    CallerAudio,
    CallEvent,
    MarkPlayed,
    MediaEvent,
    StreamStopped,
    ToolCalled,
    TranscriptLine,
)
from patterd.protocols.wav import WavError, wav_to_ulaw8k
from patterd.providers.kinds import TTS
from patterd.providers.spec import BuildContext
from patterd.store import open_store
from patterd.tasks import cancel_and_wait

FRAME_SECS = 0.02
SIMULATED_CALLER = "+15550000000"  # the synthetic caller's number in records
REPLY_QUIET_SECS = 1.2  # the agent is done answering after this much silence from it
REPLY_TIMEOUT_SECS = 20.0


class SimulatedCaller:
    """A CarrierLeg whose far end is a script: it speaks lines and listens in real time like a phone."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self._outgoing: asyncio.Queue[MediaEvent] = asyncio.Queue()
        self._play_end = 0.0
        self._marks: list[asyncio.TimerHandle] = []
        self.agent_audio = bytearray()
        self.last_agent_audio = 0.0
        self.agent_started = asyncio.Event()
        self.hung_up = asyncio.Event()
        self._speaking_task: asyncio.Task[None] | None = None

    # -- CarrierLeg (the daemon's side)
    async def events(self) -> AsyncIterator[MediaEvent]:
        while True:
            event = await self._outgoing.get()
            yield event
            if isinstance(event, StreamStopped):
                return

    async def send_audio(self, ulaw: bytes) -> None:
        now = self.clock.monotonic()
        self._play_end = max(now, self._play_end) + len(ulaw) / 8000
        self.agent_audio.extend(ulaw)
        self.last_agent_audio = self._play_end
        self.agent_started.set()

    async def send_mark(self, name: str) -> None:
        delay = max(0.0, self._play_end - self.clock.monotonic())
        loop = asyncio.get_running_loop()
        self._marks.append(loop.call_later(delay, self._outgoing.put_nowait, MarkPlayed(name)))

    async def clear(self) -> None:
        self._play_end = self.clock.monotonic()
        self.last_agent_audio = self._play_end
        for handle in self._marks:
            handle.cancel()
        self._marks.clear()

    async def close(self) -> None:
        self.hung_up.set()

    # -- the caller's side
    async def keep_line_open(self) -> None:
        """Send silence frames every 20 ms, like a phone line, until hung up."""
        silence = silence_ulaw(20)
        next_at = self.clock.monotonic()
        while not self.hung_up.is_set():
            if self._speaking_task is None or self._speaking_task.done():
                self._outgoing.put_nowait(CallerAudio(silence))
            next_at += FRAME_SECS
            await asyncio.sleep(max(0.0, next_at - self.clock.monotonic()))

    async def speak(self, ulaw: bytes) -> None:
        """Say something (real-time paced frames), then go quiet."""
        splitter = FrameSplitter(FRAME_BYTES)
        frames = splitter.push(ulaw) + splitter.flush()

        async def run() -> None:
            next_at = self.clock.monotonic()
            for frame in frames:
                if self.hung_up.is_set():
                    return
                self._outgoing.put_nowait(CallerAudio(frame))
                next_at += FRAME_SECS
                await asyncio.sleep(max(0.0, next_at - self.clock.monotonic()))

        self._speaking_task = asyncio.create_task(run())
        await self._speaking_task

    async def wait_agent_done(self, since: float) -> bool:
        """Wait until the agent has answered (audio after `since`) and gone quiet; False on timeout."""
        deadline = self.clock.monotonic() + REPLY_TIMEOUT_SECS
        while not self.hung_up.is_set() and self.clock.monotonic() < deadline:
            now = self.clock.monotonic()
            if (
                self.last_agent_audio > since
                and now - max(self.last_agent_audio, self._play_end) >= REPLY_QUIET_SECS
            ):
                return True
            await asyncio.sleep(0.05)
        return self.hung_up.is_set()

    def hang_up(self) -> None:
        """The caller hangs up."""
        self._outgoing.put_nowait(StreamStopped("caller hung up"))
        self.hung_up.set()


@dataclass
class TranscriptPrinter:
    """Prints the conversation as it happens and remembers it for the summary."""

    out: IO[str]
    lines: list[TranscriptLine] = field(default_factory=list)
    ended: CallEnded | None = None

    def observe(self, event: CallEvent) -> None:
        if isinstance(event, TranscriptLine):
            self.lines.append(event)
            extra = []
            if event.latency_ms is not None:
                extra.append(f"turn {event.latency_ms:.0f} ms")
            for key, name in TURN_STAGES:  # the turn's stages, which sum to it
                value = getattr(event, key)
                if value is not None:
                    extra.append(f"{name} {value:.0f} ms")
            if event.interrupted:
                extra.append("interrupted")
            suffix = f"  ({', '.join(extra)})" if extra else ""
            print(f"{event.role:>9}: {event.text}{suffix}", file=self.out, flush=True)
        elif isinstance(event, ToolCalled):
            print(
                f"     tool: {event.name}({event.arguments}) → {event.error or event.result}",
                file=self.out,
                flush=True,
            )
        elif isinstance(event, CallEnded):
            self.ended = event


async def run_simulation(
    config: Config,
    registry: Registry,
    *,
    agent: str | None = None,
    say: Sequence[str] | None = None,
    text: Sequence[str] | None = None,
    wav: Path | None = None,
    out: IO[str] = sys.stdout,
) -> int:
    """Run the call; returns 0 when it completed, 1 otherwise (WavError before the call for a bad `wav`)."""
    caller_audio = read_caller_wav(wav) if wav is not None else None
    store = open_store(
        config.persist,
        redact_phone=config.logging.redact_phone,
        retention_days=config.logging.retention_days,
        pricing=config.pricing,
    )
    printer = TranscriptPrinter(out)
    graph = await build_graph(config, registry, local_url="http://127.0.0.1:0")
    try:
        runtime = agent_runtime(graph, agent or next(iter(graph.agents)))
    except KeyError:
        await graph.aclose()
        print(f"unknown agent {agent!r}; known: {', '.join(graph.agents)}", file=sys.stderr)
        return 1

    def emit(event: CallEvent) -> None:
        store.handle(event)
        printer.observe(event)

    async with aiohttp.ClientSession() as http:
        board = Switchboard(graph, emit=emit, http=http)
        callee = runtime.config.phone_number or config.phone_number or ""
        session = board.open_call(
            CallSpec(
                call_id=new_call_id(),
                direction="inbound",
                carrier_name="local",
                carrier_call_id="",
                caller=SIMULATED_CALLER,
                callee=callee,
            ),
            agent_name=runtime.name,
        )
        caller = SimulatedCaller()
        print(f"simulating a call to agent {runtime.name!r} ({runtime.provider_name})", file=out, flush=True)
        call = asyncio.create_task(board.run_media(session.call_id, caller))
        line_open = asyncio.create_task(caller.keep_line_open())
        try:
            await _script(caller, session, runtime, graph, registry, say=say, text=text, wav=caller_audio)
        finally:
            if not caller.hung_up.is_set():
                caller.hang_up()
            with contextlib.suppress(PatterdError):
                await call
            await cancel_and_wait(line_open)
    await graph.aclose()
    store.flush()
    store.close()
    ended = printer.ended
    latencies = sorted(t.latency_ms for t in printer.lines if t.latency_ms is not None)
    p50 = f"{latencies[len(latencies) // 2]:.0f} ms" if latencies else "n/a"
    status = ended.status if ended else "unknown"
    print(
        f"call {session.call_id}: {status} ({ended.reason if ended else ''}); "
        f"{len(printer.lines)} transcript lines; turn latency p50 {p50}",
        file=out,
        flush=True,
    )
    stages = []
    for key, name in TURN_STAGES:
        values = sorted(
            v for t in printer.lines if t.latency_ms is not None and (v := getattr(t, key)) is not None
        )
        if values:
            stages.append(f"{name} {values[len(values) // 2]:.0f} ms")
    if stages:
        print(f"turn stages p50: {', '.join(stages)}", file=out, flush=True)
    if isinstance(config.persist, Path):
        print(f"record: {config.persist}/calls/", file=out, flush=True)
    elif config.persist is not None:
        print(f"record: {config.persist} (PostgreSQL)", file=out, flush=True)
    return 0 if status in ("completed", "voicemail") else 1


async def _script(
    caller: SimulatedCaller,
    session: Any,
    runtime: Any,
    graph: Any,
    registry: Registry,
    *,
    say: Sequence[str] | None,
    text: Sequence[str] | None,
    wav: bytes | None,
) -> None:
    # Like a caller who waits for the line to connect: text pushed (or audio played) before the
    # engine session is open would be lost, and without a greeting nothing else waits for it.
    if not await session.engine_ready():
        return  # the call ended before its engine was up (the summary says why)
    start = caller.clock.monotonic()
    if session.first_message:  # let the greeting play out first
        await caller.wait_agent_done(start - 1)
    if say:
        async with _caller_voice(graph, registry) as tts:
            for line in say:
                if caller.hung_up.is_set():
                    return
                audio = bytearray()
                async for chunk in tts.synthesize(line):
                    audio.extend(chunk)
                sent = caller.clock.monotonic()
                await caller.speak(bytes(audio))
                await caller.wait_agent_done(sent)
    elif text:
        for line in text:
            if caller.hung_up.is_set():
                return
            sent = caller.clock.monotonic()
            session.push_text(line)
            await caller.wait_agent_done(sent)
    elif wav is not None:
        sent = caller.clock.monotonic()
        await caller.speak(wav)
        await caller.wait_agent_done(sent)


def read_caller_wav(path: Path) -> bytes:
    """The WAV file at `path` as 8 kHz μ-law; WavError (one line) when it cannot be read or decoded."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WavError(f"cannot read it: {exc.strerror or exc}") from None
    return wav_to_ulaw8k(data)


@contextlib.asynccontextmanager
async def _caller_voice(graph: Any, registry: Registry) -> AsyncIterator[TTS]:
    """The synthetic caller's voice: the offline TTS (no keys needed, whatever the agent uses)."""
    spec = registry.get("tts", "offline")
    async with spec.build(spec.options(), BuildContext()) as tts:
        yield cast(TTS, tts)


def simulate(
    config: Config,
    registry: Registry,
    *,
    agent: str | None,
    say: Sequence[str] | None,
    text: Sequence[str] | None,
    wav: str | None,
) -> int:
    """The `patterd simulate` command."""
    try:
        return asyncio.run(
            run_simulation(config, registry, agent=agent, say=say, text=text, wav=Path(wav) if wav else None)
        )
    except PatterdError as exc:
        print(f"patterd simulate: {exc}", file=sys.stderr)
        return 1
    except WavError as exc:
        print(f"patterd simulate: {wav}: {exc}", file=sys.stderr)
        return 1
