"""`recording: local` through the real app: the notice first, recording.wav written, and its route (ranges, token, 404)."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from pathlib import Path

import aiohttp

from patterd.providers.offline_tts import OfflineTTS, OfflineTTSOptions, _find_backend
from patterd.store.recording_file import HEADER_BYTES, read_recording
from patterd.store.recording_path import open_recording, record_dir, recording_file
from tests.web.fake_runtime import CONFIG, serve_runtime

TOKEN = "rec-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NOTICE = "This call may be recorded."
RECORDING_CONFIG = CONFIG.replace(
    "    first_message: Hello from the test desk.\n",
    f'    first_message: Hello from the test desk.\n    recording: local\n    recording_notice: "{NOTICE}"\n',
)


def offline_voice() -> OfflineTTS:
    """The agent's own TTS (tts.offline, defaults), to know how long its sentences sound."""
    options = OfflineTTSOptions()
    return OfflineTTS(options, *_find_backend(options))


async def test_notice_recording_and_its_route(tmp_path: Path) -> None:
    async with (
        serve_runtime(tmp_path, token=TOKEN, config_text=RECORDING_CONFIG) as served,
        aiohttp.ClientSession(headers=AUTH) as session,
    ):
        runtime = served.runtime
        runtime.switchboard.open_recording = functools.partial(open_recording, runtime.store)
        async with session.post(served.base_url + "/webhooks/local/voice", json={}) as resp:
            assert resp.status == 201
            body = await resp.json()
        call_id = body["call_id"]
        ws = await session.ws_connect(served.base_url.replace("http", "ws") + body["media_path"])
        await ws.send_str(json.dumps({"event": "start"}))
        loop = asyncio.get_running_loop()
        heard = 0
        play_end = loop.time()  # this client plays what it gets at 8 kHz, like a browser would
        echoes: set[asyncio.Task[None]] = set()

        async def echo(name: str, delay: float) -> None:
            await asyncio.sleep(delay)  # pacing: the mark is echoed when the audio before it has played
            await ws.send_str(json.dumps({"event": "mark", "mark": {"name": name}}))

        lines: list[dict[str, object]] = []
        async with asyncio.timeout(20):
            async for msg in ws:  # the greeting, then its final transcript line once it has played
                data = json.loads(msg.data)
                if data["event"] == "media":
                    size = len(base64.b64decode(data["media"]["payload"]))
                    heard += size
                    play_end = max(play_end, loop.time()) + size / 8000
                elif data["event"] == "mark":
                    task = asyncio.create_task(echo(data["mark"]["name"], play_end - loop.time()))
                    echoes.add(task)
                    task.add_done_callback(echoes.discard)
                elif data["event"] == "transcript":
                    lines.append(data)
                    if not data.get("partial"):
                        break
        # The caller heard the notice first: the words heard open with it, and the audio holds both.
        assert lines[-1]["text"] == f"{NOTICE} Hello from the test desk.", lines
        voice = offline_voice()
        alone = sum([len(c) async for c in voice.synthesize("Hello from the test desk.")])
        notice = sum([len(c) async for c in voice.synthesize(NOTICE)])
        assert heard >= alone + 0.8 * notice, (heard, alone, notice)
        # While the call is live, the file is there and valid (a header within what is on disk).
        path = recording_file(runtime.store, call_id)
        assert path is not None and path.name == "recording.wav"
        await ws.send_str(json.dumps({"event": "stop"}))
        await ws.close()
        await runtime.switchboard.end_all("test over")
        url = f"{served.base_url}/api/v1/calls/{call_id}/recording"
        whole = path.read_bytes()
        left, right = read_recording(path)
        assert len(left) == len(right) > 8000 and set(right) != {0xFF}  # the greeting is on the right

        async with session.get(url) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
            assert resp.headers["Accept-Ranges"] == "bytes"
            assert await resp.read() == whole
        async with session.get(url, headers={"Range": "bytes=0-99"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 0-99/{len(whole)}"
            assert await resp.read() == whole[:100]
        async with session.get(url, headers={"Range": f"bytes={HEADER_BYTES}-"}) as resp:
            assert resp.status == 206 and await resp.read() == whole[HEADER_BYTES:]
        async with session.get(url, headers={"Range": f"bytes={len(whole) + 10}-"}) as resp:
            assert resp.status == 416
            assert resp.headers["Content-Range"] == f"bytes */{len(whole)}"

    # The same token rule as the rest of /api/: none or a wrong one is refused.
    async with serve_runtime(tmp_path / "again", token=TOKEN) as served, aiohttp.ClientSession() as bare:
        url = f"{served.base_url}/api/v1/calls/{call_id}/recording"
        async with bare.get(url) as resp:
            assert resp.status == 401
        async with bare.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
        async with bare.get(url, headers=AUTH) as resp:  # a call this store never had: 404
            assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_no_recording_without_local_mode(tmp_path: Path) -> None:
    async with serve_runtime(tmp_path) as served, aiohttp.ClientSession() as session:
        runtime = served.runtime
        runtime.switchboard.open_recording = functools.partial(open_recording, runtime.store)
        async with session.post(served.base_url + "/webhooks/local/voice", json={}) as resp:
            call_id = (await resp.json())["call_id"]
        url = f"{served.base_url}/api/v1/calls/{call_id}/recording"
        async with session.get(url) as resp:  # a known call, never recorded
            assert resp.status == 404
        directory = record_dir(runtime.store, call_id)
        assert directory is not None and not (directory / "recording.wav").exists()
