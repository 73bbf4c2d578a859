"""Tests of the fake Twilio itself: official signatures, TwiML parsing, real-time playback with mark/clear, REST."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.fakes.twilio import FakeTwilio, FakeTwilioRest, basic_auth, parse_twiml

TOKEN = "f" * 32
PUBLIC = "gw.example.com"


@dataclass
class MiniDaemon:
    """Just enough of a Twilio app to test the fake: checks signatures with the official validator."""

    validator: RequestValidator = field(default_factory=lambda: RequestValidator(TOKEN))
    webhooks: list[tuple[str, dict[str, str], bool]] = field(default_factory=list)
    ws_signature_ok: list[bool] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    socket: web.WebSocketResponse | None = None
    got_frame: asyncio.Event = field(default_factory=asyncio.Event)
    reject: bool = False
    url: str = ""
    got_webhook: asyncio.Event = field(default_factory=asyncio.Event)

    async def voice(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        public = f"https://{PUBLIC}{request.path_qs}"
        ok = self.validator.validate(public, form, request.headers.get("X-Twilio-Signature", ""))
        self.webhooks.append((request.path, form, ok))
        self.got_webhook.set()
        if not ok:
            return web.Response(status=403)
        if request.match_info["hook"] != "voice":
            return web.Response(status=204)
        if self.reject:
            return web.Response(text="<Response><Reject/></Response>", content_type="text/xml")
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="wss://{PUBLIC}/ws/stream/c1"><Parameter name="call_id" value="c1"/></Stream>'
            "</Connect></Response>"
        )
        return web.Response(text=twiml, content_type="text/xml")

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        public = f"wss://{PUBLIC}{request.path_qs}"
        self.ws_signature_ok.append(
            self.validator.validate(public, {}, request.headers.get("X-Twilio-Signature", ""))
        )
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.socket = ws
        async for msg in ws:
            self.frames.append(json.loads(msg.data))
            self.got_frame.set()
        return ws

    async def wait_frames(self, predicate: Any, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.frames):
                self.got_frame.clear()
                await self.got_frame.wait()

    async def send(self, message: dict[str, Any]) -> None:
        assert self.socket is not None
        await self.socket.send_str(json.dumps(message))


@pytest.fixture
async def daemon() -> AsyncIterator[MiniDaemon]:
    mini = MiniDaemon()
    app = web.Application()
    app.router.add_post("/webhooks/twilio/{hook}", mini.voice)
    app.router.add_get("/ws/stream/{call_id}", mini.stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    mini.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield mini
    await runner.cleanup()


def test_parse_twiml() -> None:
    twiml = parse_twiml(
        '<?xml version="1.0"?><Response><Connect><Stream url="wss://h/ws/stream/x">'
        '<Parameter name="a" value="1"/><Parameter name="b" value="&amp;"/></Stream></Connect></Response>'
    )
    assert twiml.verbs == ("Connect",) and twiml.stream_url == "wss://h/ws/stream/x"
    assert twiml.parameters == {"a": "1", "b": "&"} and not twiml.rejected
    assert parse_twiml("<Response><Reject/></Response>").rejected
    assert parse_twiml("<Response><Dial> +15550009999 </Dial></Response>").dial == "+15550009999"
    with pytest.raises(AssertionError, match="<Response>"):
        parse_twiml("<Nope/>")
    with pytest.raises(AssertionError, match="wss://"):
        parse_twiml('<Response><Connect><Stream url="https://h/x"/></Connect></Response>')


async def test_inbound_call_is_signed_and_streams_paced_audio(daemon: MiniDaemon) -> None:
    async with FakeTwilio(daemon.url, PUBLIC, auth_token=TOKEN) as net:
        call = await net.inbound_call("+15551112222", "+15553334444", continuous=False)
        assert call.webhook_status == 200 and call.twiml is not None
        assert call.twiml.parameters == {"call_id": "c1"}
        path, form, ok = daemon.webhooks[0]
        assert ok and path == "/webhooks/twilio/voice"
        assert (
            form["From"] == "+15551112222"
            and form["CallStatus"] == "ringing"
            and form["Direction"] == "inbound"
        )
        assert form["CallSid"].startswith("CA") and form["ApiVersion"] == "2010-04-01"
        await daemon.wait_frames(lambda f: len(f) >= 2)
        assert daemon.ws_signature_ok == [True]
        connected, start = daemon.frames[:2]
        assert connected == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        assert start["start"]["customParameters"] == {"call_id": "c1"}
        assert start["start"]["mediaFormat"] == {
            "encoding": "audio/x-mulaw",
            "sampleRate": 8000,
            "channels": 1,
        }
        assert start["start"]["callSid"] == call.call_sid and start["sequenceNumber"] == "1"

        audio = bytes(range(256)) * 5  # 1280 bytes = 8 frames, the last one padded
        await call.say(audio)
        await daemon.wait_frames(lambda f: sum(m["event"] == "media" for m in f) >= 8)
        media = [m for m in daemon.frames if m["event"] == "media"]
        assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media) == audio
        assert all(m["media"]["track"] == "inbound" for m in media)
        stamps = [int(m["media"]["timestamp"]) for m in media]
        assert stamps == sorted(stamps) and stamps[1] - stamps[0] == 20
        elapsed = call.speech_started and (asyncio.get_running_loop().time() - call.speech_started[0])
        assert elapsed and elapsed >= 0.13  # 8 frames paced at 20 ms

        await call.send_dtmf("7")
        await daemon.wait_frames(lambda f: f[-1]["event"] == "dtmf")
        assert daemon.frames[-1]["dtmf"] == {"track": "inbound_track", "digit": "7"}
        code = await call.post_status("completed")
        assert code == 204 and daemon.webhooks[-1][2] and daemon.webhooks[-1][1]["CallStatus"] == "completed"
        await call.stop()
        await daemon.wait_frames(lambda f: f[-1]["event"] == "stop")


async def test_wrong_token_fails_the_official_check(daemon: MiniDaemon) -> None:
    async with FakeTwilio(daemon.url, PUBLIC, auth_token="0" * 32) as net:
        call = await net.inbound_call()
        assert call.webhook_status == 403 and call.twiml is None
    async with FakeTwilio(daemon.url, PUBLIC, auth_token=TOKEN) as net:
        call = await net.inbound_call(signature=None)
        assert call.webhook_status == 403


async def test_playback_marks_and_clear_follow_twilio(daemon: MiniDaemon) -> None:
    async with FakeTwilio(daemon.url, PUBLIC, auth_token=TOKEN) as net:
        call = await net.inbound_call(continuous=False)
        await daemon.wait_frames(lambda f: len(f) >= 2)
        sid = call.stream_sid
        # A mark with nothing buffered is echoed at once.
        await daemon.send({"event": "mark", "streamSid": sid, "mark": {"name": "empty"}})
        await daemon.wait_frames(lambda f: any(m.get("mark", {}).get("name") == "empty" for m in f))
        # 10 frames (200 ms) then a mark: echoed only once they have played.
        sent_at = asyncio.get_running_loop().time()
        for i in range(10):
            await daemon.send(
                {
                    "event": "media",
                    "streamSid": sid,
                    "media": {"payload": base64.b64encode(bytes([i]) * 160).decode()},
                }
            )
        await daemon.send({"event": "mark", "streamSid": sid, "mark": {"name": "a"}})
        echoed_at = await call.wait_for_mark("a")
        assert echoed_at - sent_at >= 0.17
        assert bytes(call.played) == b"".join(bytes([i]) * 160 for i in range(10))
        await daemon.wait_frames(lambda f: any(m.get("mark", {}).get("name") == "a" for m in f))
        # 2 s of audio then a mark, then clear: the mark comes back at once and the rest is never played.
        for _ in range(100):
            await daemon.send(
                {
                    "event": "media",
                    "streamSid": sid,
                    "media": {"payload": base64.b64encode(b"\x01" * 160).decode()},
                }
            )
        await daemon.send({"event": "mark", "streamSid": sid, "mark": {"name": "b"}})
        await call.wait_for_audio(1600 + 160 * 3, played=True)
        await daemon.send({"event": "clear", "streamSid": sid})
        cleared_at = await call.wait_for_clear()
        mark_b = await call.wait_for_mark("b")
        assert mark_b - cleared_at < 0.05
        assert call.buffered_bytes == 0
        assert len(call.played) < 1600 + 16000
        assert call.violations == []
        await daemon.send({"event": "bogus", "streamSid": sid})
        await call.wait_until(lambda: bool(call.violations))
        await call.stop()


async def test_rejected_call_opens_no_stream(daemon: MiniDaemon) -> None:
    daemon.reject = True
    async with FakeTwilio(daemon.url, PUBLIC, auth_token=TOKEN) as net:
        call = await net.inbound_call()
        assert call.twiml is not None and call.twiml.rejected and call.twiml.stream_url is None
        assert daemon.socket is None


# ------------------------------------------------------------------ REST


async def test_rest_fake_auth_calls_errors_and_outbound_answer(daemon: MiniDaemon) -> None:
    async with FakeTwilioRest(auth_token=TOKEN) as rest, aiohttp.ClientSession() as http:
        api = f"{rest.base_url}/2010-04-01/Accounts/{rest.account_sid}"
        auth = basic_auth(rest.account_sid, TOKEN)
        async with http.get(f"{api}.json", headers=basic_auth(rest.account_sid, "wrong")) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == 20003
        async with http.post(f"{api}/Calls.json", data={"To": "+1555"}, headers=auth) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 21603
        url = f"https://{PUBLIC}/webhooks/twilio/voice?call_id=c9"
        form = [("To", "+15550009999"), ("From", "+15550001234"), ("Url", url)]
        form += [("StatusCallback", f"https://{PUBLIC}/webhooks/twilio/status?call_id=c9")]
        form += [("StatusCallbackEvent", "initiated"), ("StatusCallbackEvent", "completed")]
        form += [
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", f"https://{PUBLIC}/webhooks/twilio/amd?call_id=c9"),
        ]
        rest.fail_next(500, path_contains="Calls.json")
        async with http.post(f"{api}/Calls.json", data=form, headers=auth) as resp:
            assert resp.status == 500 and (await resp.json())["code"] == 20500
        async with http.post(f"{api}/Calls.json", data=form, headers=auth) as resp:
            created = await resp.json()
            assert resp.status == 201 and created["sid"].startswith("CA") and created["status"] == "queued"
        resource = rest.calls[created["sid"]]
        assert resource.status_callback_events == ["initiated", "completed"] and resource.async_amd
        assert [r.status for r in rest.requests] == [401, 400, 500, 201]

        async with FakeTwilio(daemon.url, PUBLIC, rest=rest) as net:
            daemon.validator = RequestValidator(TOKEN)
            call = await net.answer_outbound(resource)
            _, answered, ok = daemon.webhooks[-1]
            assert ok and answered["Direction"] == "outbound-api" and answered["CallSid"] == created["sid"]
            assert daemon.webhooks[-1][0] == "/webhooks/twilio/voice"
            assert await call.post_amd("machine_end_beep") == 204
            assert daemon.webhooks[-1][1]["AnsweredBy"] == "machine_end_beep" and daemon.webhooks[-1][2]
            # The daemon hangs up over REST: Twilio stops the stream and posts the status callback.
            async with http.post(
                f"{api}/Calls/{created['sid']}.json", data={"Status": "completed"}, headers=auth
            ) as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "completed"
            await daemon.wait_frames(lambda f: f[-1]["event"] == "stop")
            await call.wait_closed()
            async with asyncio.timeout(5):
                while daemon.webhooks[-1][1].get("CallStatus") != "completed":
                    daemon.got_webhook.clear()
                    await daemon.got_webhook.wait()
            async with http.post(
                f"{api}/Calls/CA404.json", data={"Status": "completed"}, headers=auth
            ) as resp:
                assert resp.status == 404 and (await resp.json())["code"] == 20404
