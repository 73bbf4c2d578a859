"""A Twilio Media Streams caller (`FakeCall`): caller audio out in real time, agent audio played in real time.

Part of the fake Twilio (`tests.fakes.twilio` documents what it follows).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from patterd.protocols.audio import FRAME_BYTES, wav_to_ulaw8k
from tests.fakes.twilio_rest import _wait_until, new_sid

if TYPE_CHECKING:
    from tests.fakes.twilio import FakeTwilio, Twiml

FRAME_SECS = 0.02
SILENCE = b"\xff" * FRAME_BYTES


def spoken_ulaw(text: str, *, voice: str = "en-us", speed_wpm: int = 160) -> bytes:
    """`text` spoken by espeak-ng, as 8 kHz μ-law (for a caller that says something real)."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "--stdout", text], check=True, capture_output=True
    ).stdout
    return wav_to_ulaw8k(wav)


class FakeCall:
    """One call's Media Stream as Twilio runs it: caller audio out in real time, agent audio played in real time."""

    def __init__(
        self, net: FakeTwilio, call_sid: str, from_: str, to: str, direction: str, *, continuous: bool = True
    ) -> None:
        self.net = net
        self.call_sid = call_sid
        self.from_ = from_
        self.to = to
        self.direction = direction
        self.continuous = continuous  # real Twilio streams silence between words; False sends only speech
        self.stream_sid = new_sid("MZ")
        self.webhook_status = 0
        self.twiml: Twiml | None = None
        self.status_callback: str | None = None
        self.amd_callback: str | None = None
        self.transferred_to: str | None = None
        # what the daemon sent us, with loop.time() stamps
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.media_frame_sizes: list[int] = []
        self.media_times: list[float] = []
        self.first_audio_at: float | None = None
        self.clears: list[float] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.played = bytearray()  # agent audio the caller has heard, in order
        self.speech_started: list[float] = []  # when each `say` began going out
        self.close_code: int | None = None
        self.violations: list[str] = []  # messages Twilio would not accept
        self.closed = False
        self.handshake_status: int | None = None  # HTTP status when the websocket upgrade was refused
        # playback state (Twilio's buffer)
        self._buffer = bytearray()
        self._queued_total = 0
        self._played_total = 0
        self._pending_marks: deque[tuple[int, str]] = deque()
        self._audio_ready = asyncio.Event()
        # sending state
        self._outgoing: deque[bytes] = deque()
        self._outgoing_done: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._frames_sent = 0
        self._frames_queued = 0
        self._speech_marks: deque[int] = deque()  # frame index where each `say` begins
        self._t0 = 0.0
        self._sequence = 0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.Future[None]] = []  # playback and caller-audio pacing
        self._loop = asyncio.get_running_loop()

    @property
    def twiml_parameters(self) -> dict[str, str]:
        return dict(self.twiml.parameters) if self.twiml else {}

    def background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "a condition"
    ) -> None:
        """Wait (bounded) until `predicate()` holds; re-checked whenever the stream changes."""
        await _wait_until(self._changed, predicate, timeout, what)

    # ---------------------------------------------------------------- the stream

    async def connect_media(
        self, *, signature: str | None = "auto", custom_parameters: dict[str, str] | None = None
    ) -> None:
        """Open the <Stream> websocket (signed like Twilio signs it) and send `connected` and `start`."""
        assert self.twiml is not None and self.twiml.stream_url, "no <Connect><Stream> to follow"
        public = self.twiml.stream_url
        headers = self.handshake_headers(public, signature)
        try:
            self._ws = await self.net.session.ws_connect(
                self.net.local_url(public), headers=headers, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            self.handshake_status = exc.status
            self.closed = True
            return
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"}, sequenced=False)
        params = self.twiml.parameters if custom_parameters is None else custom_parameters
        await self._send(
            {
                "event": "start",
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": self.net.account_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": params,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )
        self._t0 = self._loop.time()
        self.background(self._reader())
        self._timers = [asyncio.ensure_future(self._player()), asyncio.ensure_future(self._pump())]

    def handshake_headers(self, public_url: str, signature: str | None) -> dict[str, str]:
        """The websocket upgrade's headers: Twilio signs it like a webhook (`signature=None` omits it)."""
        headers = {"User-Agent": "Twilio.TmeWs/1.0"}
        if signature == "auto":
            signature = self.net.sign(public_url, None)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        return headers

    async def _send(self, message: dict[str, Any], *, sequenced: bool = True) -> None:
        if self._ws is None or self._ws.closed:
            return
        if sequenced:
            self._sequence += 1
            message = {**message, "sequenceNumber": str(self._sequence)}
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):  # the daemon closed the socket
                await self._ws.send_str(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        """Send a frame as is (malformed-frame tests)."""
        assert self._ws is not None
        async with self._send_lock:
            await self._ws.send_str(text)

    async def say(self, ulaw: bytes, *, wait: bool = True) -> None:
        """Speak: queue caller audio; it goes out as 20 ms media frames in real time (awaits the last frame)."""
        assert self._ws is not None and not self._ws.closed, "the media stream is not open"
        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
        if frames and len(frames[-1]) < FRAME_BYTES:
            frames[-1] = frames[-1] + b"\xff" * (FRAME_BYTES - len(frames[-1]))
        done: asyncio.Future[None] = self._loop.create_future()
        first = self._frames_queued
        self._outgoing.extend(frames)
        self._frames_queued += len(frames)
        self._outgoing_done.append((self._frames_queued, done))
        self._speech_marks.append(first)
        if wait:
            await done

    async def send_silence(self, ms: int) -> None:
        """Queue `ms` of caller silence (for a stream that is not continuous)."""
        await self.say(b"\xff" * (8 * ms))

    async def send_dtmf(self, digit: str) -> None:
        await self._send(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self) -> None:
        """The caller hangs up: `stop`, then the socket closes."""
        await self._end_stream()
        await self.close()

    async def remote_end(self, status: str | None) -> None:
        """Twilio ends the stream because the call was hung up (status) or redirected (None) over REST."""
        await self._end_stream()
        await self.close()
        if status is not None and self.status_callback:
            # Like Twilio, a status callback the daemon cannot take (it was just killed, or is stopping)
            # is a failed delivery, not an error of the call: this runs in a background task nobody awaits.
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                await self.post_status(status)

    async def _end_stream(self) -> None:
        await self._send(
            {
                "event": "stop",
                "stop": {"accountSid": self.net.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    async def close(self) -> None:
        """Close the media websocket from Twilio's side (no `stop`)."""
        for task in self._timers:
            if task is not asyncio.current_task():
                task.cancel()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        self.closed = True
        await self._notify()

    async def settle(self, timeout: float = 2.0) -> None:
        """Let background work (reader, REST-triggered hangups) finish; cancel what is left."""
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    # ---------------------------------------------------------------- callbacks Twilio POSTs

    async def post_status(
        self, status: str = "completed", *, duration_secs: int = 1, url: str | None = None
    ) -> int:
        """The status callback (signed), e.g. CallStatus=completed after the call."""
        target = url or self.status_callback
        assert target, "no StatusCallback for this call"
        params = self.net._call_params(self, status)
        params.update({"CallDuration": str(duration_secs), "Timestamp": "Mon, 01 Jan 2026 00:00:00 +0000"})
        code, _ = await self.net.post_webhook(target, params)
        return code

    async def post_amd(self, answered_by: str = "machine_end_beep", *, url: str | None = None) -> int:
        """The AsyncAmd callback: AnsweredBy = human, machine_start, machine_end_beep, ..."""
        target = url or self.amd_callback
        assert target, "this call asked for no AsyncAmdStatusCallback"
        params = {
            "CallSid": self.call_sid,
            "AccountSid": self.net.account_sid,
            "AnsweredBy": answered_by,
            "MachineDetectionDuration": "2400",
        }
        code, _ = await self.net.post_webhook(target, params)
        return code

    async def post_recording(self, url: str, recording_url: str, *, duration_secs: int = 3) -> int:
        params = {
            "AccountSid": self.net.account_sid,
            "CallSid": self.call_sid,
            "RecordingSid": new_sid("RE"),
            "RecordingUrl": recording_url,
            "RecordingStatus": "completed",
            "RecordingDuration": str(duration_secs),
            "RecordingChannels": "1",
            "RecordingSource": "StartCallRecording",
        }
        code, _ = await self.net.post_webhook(url, params)
        return code

    # ---------------------------------------------------------------- tasks

    async def _pump(self) -> None:
        """Caller audio out: one frame every 20 ms on a fixed schedule, silence when idle if continuous."""
        tick = 0
        while self._ws is not None and not self._ws.closed:
            delay = self._t0 + tick * FRAME_SECS - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tick += 1
            if self._outgoing:
                frame = self._outgoing.popleft()
                if self._speech_marks and self._speech_marks[0] == self._frames_sent:
                    self._speech_marks.popleft()
                    self.speech_started.append(self._loop.time())
                self._frames_sent += 1
            elif self.continuous:
                frame = SILENCE
            else:
                continue
            await self._send_frame(tick, frame)
            while self._outgoing_done and self._outgoing_done[0][0] <= self._frames_sent:
                _, done = self._outgoing_done.popleft()
                if not done.done():
                    done.set_result(None)

    async def _send_frame(self, tick: int, frame: bytes) -> None:
        """One 20 ms frame of caller audio as the carrier's stream carries it (here a Twilio `media` message)."""
        await self._send(
            {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(tick),
                    "timestamp": str(int((tick - 1) * FRAME_SECS * 1000)),
                    "payload": base64.b64encode(frame).decode(),
                },
            }
        )

    async def _reader(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = self._loop.time()
            try:
                data = json.loads(msg.data)
                if data.get("event") == "media":
                    payload = base64.b64decode(data["media"]["payload"], validate=True)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.violations.append(f"malformed message from the daemon ({exc}): {msg.data[:200]}")
                continue
            self.received.append((now, data))
            event = data.get("event")
            if data.get("streamSid") != self.stream_sid:
                self.violations.append(
                    f"message for stream {data.get('streamSid')!r}, expected {self.stream_sid!r}"
                )
            if event == "media":
                self.media_frame_sizes.append(len(payload))
                self.media_times.append(now)
                if self.first_audio_at is None:
                    self.first_audio_at = now
                self._buffer += payload
                self._queued_total += len(payload)
                self._audio_ready.set()
            elif event == "mark":
                name = str((data.get("mark") or {}).get("name", ""))
                if self._played_total >= self._queued_total:
                    await self._echo_mark(name)  # nothing buffered: played already
                else:
                    self._pending_marks.append((self._queued_total, name))
            elif event == "clear":
                self.clears.append(now)
                self._buffer.clear()
                self._queued_total = self._played_total
                while self._pending_marks:
                    await self._echo_mark(self._pending_marks.popleft()[1])
            else:
                self.violations.append(f"unexpected message from the daemon: {msg.data[:200]}")
            await self._notify()
        self.close_code = self._ws.close_code
        self.closed = True
        self._audio_ready.set()
        await self._notify()

    async def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append((self._loop.time(), name))
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _player(self) -> None:
        """Twilio's playback: 160 bytes every 20 ms from the buffer; marks echoed as playback passes them."""
        start = self._loop.time()
        played_frames = 0
        while not self.closed:
            if not self._buffer:
                self._audio_ready.clear()
                await self._audio_ready.wait()
                start = self._loop.time()
                played_frames = 0
                continue
            chunk = bytes(self._buffer[:FRAME_BYTES])
            del self._buffer[:FRAME_BYTES]
            self.played += chunk
            self._played_total += len(chunk)
            while self._pending_marks and self._pending_marks[0][0] <= self._played_total:
                await self._echo_mark(self._pending_marks.popleft()[1])
            await self._notify()
            played_frames += 1
            delay = start + played_frames * FRAME_SECS - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    # ---------------------------------------------------------------- what tests read

    def messages(self, event: str) -> list[dict[str, Any]]:
        """Every message of one event type the daemon sent."""
        return [m for _, m in self.received if m.get("event") == event]

    async def wait_for_audio(self, n_bytes: int = 1, *, played: bool = False, timeout: float = 5.0) -> None:
        """Until the daemon sent (or, with `played`, the caller heard) at least `n_bytes` of agent audio."""

        def got() -> int:
            return len(self.played) if played else sum(self.media_frame_sizes)

        await self.wait_until(
            lambda: got() >= n_bytes, timeout=timeout, what=f"{n_bytes} bytes of agent audio"
        )

    async def wait_for_mark(self, name: str, *, timeout: float = 5.0) -> float:
        """Until the mark `name` was echoed; returns when."""
        await self.wait_until(
            lambda: any(n == name for _, n in self.marks_echoed), timeout=timeout, what=f"mark {name!r}"
        )
        return next(t for t, n in self.marks_echoed if n == name)

    async def wait_for_clear(self, *, timeout: float = 5.0) -> float:
        await self.wait_until(lambda: bool(self.clears), timeout=timeout, what="a clear message")
        return self.clears[0]

    async def wait_closed(self, *, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: self.closed, timeout=timeout, what="the media websocket to close")

    @property
    def buffered_bytes(self) -> int:
        """Agent audio Twilio holds but has not played yet."""
        return len(self._buffer)
