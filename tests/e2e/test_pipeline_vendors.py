"""The seed's pipeline YAML places a Twilio call end to end through the real daemon, against vendor fakes.

`patter.yaml` is the seed file exactly, plus `base_url:` keys pointing each provider at its fake
(the default LLM, which has no section, is pointed with `$OPENAI_BASE_URL`); credentials come from
the environment. The caller's speech (espeak-ng) goes through FakeTwilio's media stream; the daemon
streams it to the STT fake, the transcript to the LLM fake, the reply to the TTS fake and the audio
back to the caller; a second reply is cut by the caller talking over it. The same call runs with
`stt.whisper`, `llm.anthropic` and `tts.openai` swapped in.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.concurrent import cancelled_at_exit, selected
from tests.daemon_process import run_daemon
from tests.e2e.scenarios import (
    PUBLIC_HOST,
    Api,
    TwilioCarrier,
    TwilioHandle,
    read_jsonl,
    wait_for,
    wait_record,
)
from tests.fakes.openai_chat import FakeChatServer, Reply
from tests.fakes.twilio import spoken_ulaw

pytestmark = [pytest.mark.e2e]

SEED = """\
carrier: {type: twilio}
phone_number: "+15550001234"
webhook_url: gw.example.com
agents:
  - name: support
    stt: {type: deepgram, endpointing_ms: 80}
    tts: {type: elevenlabs, voice_id: rachel}
    system_prompt: You are a helpful assistant.
"""
# Spoken by espeak-ng without a pause of 80 ms inside (the seed's endpointing_ms), so each is one turn.
TURN = "When are you open"
REPLY = "We open at nine tomorrow morning."
# Long enough to still be playing (and, for a streaming TTS, still synthesizing) when the caller cuts in.
LONG_REPLY = (
    "Let me tell you everything about our opening hours this week, because they change a little. "
    "On Monday and Tuesday we open at nine and close at five in the afternoon. "
    "On Wednesday we open later, at ten, because of the staff meeting in the morning. "
    "On Thursday and Friday we are back to nine until five, and on Saturday we open from ten to two."
)
BARGE = "Hold on one moment"
KEYS = {
    "DEEPGRAM_API_KEY": "dg-test-key",
    "ELEVENLABS_API_KEY": "el-test-key",
    "OPENAI_API_KEY": "sk-test",
    "ANTHROPIC_API_KEY": "sk-ant-test",
}


def with_base_urls(seed: str, urls: dict[str, str]) -> str:
    """The seed text with `base_url: URL` added inside each role's flow mapping (nothing else changed)."""
    out = []
    for line in seed.splitlines():
        stripped = line.strip()
        if stripped.startswith("carrier: {") and "carrier" in urls:
            line = line.replace("}", f", base_url: '{urls['carrier']}'}}")
        for role in ("stt", "tts", "llm"):
            if stripped.startswith(f"{role}: {{") and role in urls:
                line = line.replace("}", f", base_url: '{urls[role]}'}}")
        out.append(line)
    return "\n".join(out) + "\n"


@dataclass
class Vendors:
    """The fakes one variant's call talks to, what to check on them, and the YAML that points at them."""

    yaml: str
    env: dict[str, str]
    script_turn: Callable[[str], None]  # the STT hears this next
    script_reply: Callable[[str], None]  # the LLM answers this next
    llm_requests: Callable[[], list[dict[str, Any]]]  # request bodies, in order
    tts_texts: Callable[[], list[str]]
    tts_active: Callable[[], int]
    tts_cancelled: Callable[[], int]
    check_wire: Callable[[], None]  # vendor-specific assertions on what the daemon sent
    providers: dict[str, str] = field(default_factory=dict)  # component → provider name in Usage


def need(module: str) -> Any:
    """Import a provider or fake module another engineer adds in this wave; skip while it is missing."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not in the tree yet")
    return importlib.import_module(module)


@contextlib.asynccontextmanager
async def seed_vendors(carrier_url: str) -> AsyncIterator[Vendors]:
    """Deepgram + default OpenAI Chat Completions + ElevenLabs: the seed exactly."""
    need("patterd.providers.deepgram")
    need("patterd.providers.elevenlabs")
    deepgram = importlib.import_module("tests.fakes.deepgram")
    elevenlabs = importlib.import_module("tests.fakes.elevenlabs")
    async with (
        deepgram.FakeDeepgramServer(KEYS["DEEPGRAM_API_KEY"]) as dg,
        FakeChatServer(api_key=KEYS["OPENAI_API_KEY"]) as chat,
        elevenlabs.FakeElevenLabsServer(KEYS["ELEVENLABS_API_KEY"], speed=2.0) as el,
    ):

        def check_wire() -> None:
            session = dg.sessions[0]
            assert session.param("encoding") == "mulaw" and session.param("sample_rate") == "8000"
            assert session.param("endpointing") == "80"
            assert session.headers["Authorization"] == f"Token {KEYS['DEEPGRAM_API_KEY']}"
            assert session.audio_bytes > 8000, "the caller's audio did not reach Deepgram"
            first = chat.requests[0]
            assert first.body["model"] == "gpt-4o-mini" and first.body["stream"] is True
            assert first.headers["Authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"
            stream = el.streams[0]
            assert stream.voice_id == elevenlabs.PREMADE_VOICES["rachel"], stream.voice_id
            assert stream.query.get("output_format") == "ulaw_8000", stream.query
            assert not el.refused, el.refused  # the fake answers a wrong or missing xi-api-key with 401

        yaml = with_base_urls(SEED, {"carrier": carrier_url, "stt": dg.base_url, "tts": el.base_url})
        assert re.sub(r", base_url: '[^']*'", "", yaml) == SEED  # the seed file plus base_url keys only
        yield Vendors(
            yaml=yaml,
            env={"OPENAI_BASE_URL": chat.base_url},
            script_turn=lambda text: dg.say(text),
            script_reply=lambda text: chat.replies.append(Reply(text=text)),
            llm_requests=lambda: [r.body for r in chat.requests],
            tts_texts=el.texts_received,
            tts_active=el.active_streams,
            tts_cancelled=lambda: sum(1 for s in el.streams if s.cancelled),
            check_wire=check_wire,
            providers={"stt": "deepgram", "llm": "openai", "tts": "elevenlabs"},
        )


@contextlib.asynccontextmanager
async def swapped_vendors(carrier_url: str) -> AsyncIterator[Vendors]:
    """Whisper + Anthropic + OpenAI TTS in place of Deepgram, the default LLM and ElevenLabs.

    Whisper transcribes whole utterances that the pipeline's VAD cuts, so this agent adds `vad`.
    """
    need("patterd.providers.openai_stt")
    need("patterd.providers.openai_tts")
    audio = need("tests.fakes.openai_audio")
    async with (
        audio.FakeOpenAIAudioServer(KEYS["OPENAI_API_KEY"], pace=2.0) as oa,
        anthropic_llm() as llm,
    ):

        def check_wire() -> None:
            upload = oa.transcriptions[0]
            assert upload.wav_rate == 8000 and upload.wav_seconds > 0.5, upload  # the caller's audio
            assert upload.fields.get("model"), upload.fields
            speech = oa.speech[0]
            assert speech.body["voice"] and REPLY in speech.body["input"], speech.body
            assert speech.headers.get("Authorization", speech.headers.get("authorization")) == (
                f"Bearer {KEYS['OPENAI_API_KEY']}"
            )
            llm.check_wire()

        seed = (
            SEED.replace("stt: {type: deepgram, endpointing_ms: 80}", "stt: {type: whisper}")
            .replace("tts: {type: elevenlabs, voice_id: rachel}", "tts: {type: openai}")
            .replace(
                "    system_prompt:",
                f"    llm: {{type: {llm.type}}}\n    vad: {{type: offline}}\n    system_prompt:",
            )
        )
        urls = {"carrier": carrier_url, "stt": oa.base_url, "tts": oa.base_url, "llm": llm.base_url}
        yield Vendors(
            yaml=with_base_urls(seed, urls),
            env={},
            script_turn=lambda text: oa.say(text),
            script_reply=llm.script_reply,
            llm_requests=llm.requests,
            tts_texts=oa.texts_received,
            tts_active=lambda: sum(1 for r in oa.speech if not r.ended.is_set()),
            tts_cancelled=lambda: sum(1 for r in oa.speech if r.cancelled),
            check_wire=check_wire,
            providers={"stt": "whisper", "llm": llm.type, "tts": "openai"},
        )


@dataclass
class LLMFake:
    """The LLM half of a variant: its type, fake and checks."""

    type: str
    base_url: str
    script_reply: Callable[[str], None]
    requests: Callable[[], list[dict[str, Any]]]
    check_wire: Callable[[], None]


@contextlib.asynccontextmanager
async def anthropic_llm() -> AsyncIterator[LLMFake]:
    """`llm.anthropic` against tests/fakes/anthropic.py."""
    need("patterd.providers.anthropic")
    fakes = need("tests.fakes.anthropic")
    async with fakes.FakeAnthropicServer(api_key=KEYS["ANTHROPIC_API_KEY"]) as claude:

        def check_wire() -> None:
            first = claude.requests[0]
            headers = {k.lower(): v for k, v in first.headers.items()}
            assert headers.get("x-api-key") == KEYS["ANTHROPIC_API_KEY"] and headers.get("anthropic-version")
            assert first.body["stream"] is True and first.body["system"], first.body
            assert not claude.refused, claude.refused

        yield LLMFake(
            type="anthropic",
            base_url=claude.base_url,
            script_reply=claude.queue_reply,
            requests=lambda: [r.body for r in claude.requests],
            check_wire=check_wire,
        )


VARIANTS = {"seed": seed_vendors, "swapped": swapped_vendors}


def user_lines(directory: Path) -> list[str]:
    return [line["text"] for line in read_jsonl(directory / "transcript.jsonl") if line["role"] == "user"]


async def variant_call(variant: str, tmp: Path) -> None:
    """One variant's call, from its own fakes and daemon to the checks on its record."""
    carrier = TwilioCarrier()
    await carrier.start()
    try:
        async with VARIANTS[variant](carrier.rest.base_url) as vendors:
            await run_call(vendors, carrier, tmp)
    finally:
        await carrier.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def calls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    """Each selected variant's call, both at once: a call is mostly real-time speech, so in turn they
    waited twice as long. Nothing is shared between them; each test reports its own variant's outcome."""
    variants = selected(request, "test_seed_pipeline_call", "variant")
    tasks = {v: asyncio.create_task(variant_call(v, tmp_path_factory.mktemp(v))) for v in variants}
    async with cancelled_at_exit(tasks):
        yield tasks


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_seed_pipeline_call(calls: dict[str, asyncio.Task[None]], variant: str) -> None:
    await calls[variant]


async def run_call(vendors: Vendors, carrier: TwilioCarrier, tmp: Path) -> None:
    config = tmp / "patter.yaml"
    config.write_text(vendors.yaml)
    assert PUBLIC_HOST in vendors.yaml
    env = {
        **KEYS,
        **vendors.env,
        "TWILIO_ACCOUNT_SID": carrier.rest.account_sid,
        "TWILIO_AUTH_TOKEN": carrier.rest.auth_token,
        "PATTER_LOG_DIR": str(tmp / "records"),
    }
    turn_audio = spoken_ulaw(TURN)
    barge_audio = spoken_ulaw(BARGE)
    cm = run_daemon(config, env=env)
    daemon = await asyncio.to_thread(cm.__enter__)
    stack = contextlib.AsyncExitStack()
    try:
        await carrier.attach(daemon.base_url)
        api = await stack.enter_async_context(Api(daemon.base_url))
        handle = await carrier.inbound_call()
        assert isinstance(handle, TwilioHandle)
        call_id = handle.call_id

        # Turn 1: speech → STT → LLM → TTS → the caller's ear.
        vendors.script_turn(TURN)
        vendors.script_reply(REPLY)
        await handle.say(turn_audio)
        await wait_for(lambda: len(vendors.llm_requests()) >= 1, 15, "the transcript to reach the LLM")
        assert TURN in json.dumps(vendors.llm_requests()[0])
        await wait_for(lambda: any(REPLY in t for t in vendors.tts_texts()), 10, "the reply to reach the TTS")
        await handle.wait_heard(8000, timeout=15)  # a second of the reply reached the caller
        # The reply's line is written once it has been played out: the caller speaks after it.
        await api.wait_call(call_id, lambda body: any(t["role"] == "assistant" for t in body["transcript"]))

        # Turn 2: a long reply, cut by the caller talking over it.
        vendors.script_turn(TURN)
        vendors.script_reply(LONG_REPLY)
        vendors.script_turn(BARGE)
        vendors.script_reply(REPLY)
        await handle.say(turn_audio)
        await wait_for(lambda: len(vendors.llm_requests()) >= 2, 15, "the second turn to reach the LLM")
        heard = handle.heard_bytes()
        await handle.wait_heard(heard + 8000, timeout=15)  # the long reply is playing
        clears_before = len(handle.clear_times())
        await handle.say(barge_audio)
        await handle.call.wait_until(
            lambda: len(handle.clear_times()) > clears_before, timeout=10, what="a clear after the barge-in"
        )
        barge_ms = (handle.clear_times()[clears_before] - handle.speech_started()[-1]) * 1000
        await wait_for(lambda: vendors.tts_active() == 0, 10, "the TTS stream to stop after the barge-in")
        assert vendors.tts_cancelled() >= 1, "no TTS stream was cut by the barge-in"
        await wait_for(
            lambda: len(vendors.llm_requests()) >= 3, 15, "the caller's cut-in turn to reach the LLM"
        )
        vendors.check_wire()

        await handle.hangup_from_far_end()
        directory = await wait_record(tmp / "records", call_id, "completed", timeout=15)
    finally:
        await stack.aclose()
        await carrier.detach()
        await asyncio.to_thread(cm.__exit__, None, None, None)
    assert not handle.violations()

    transcript = read_jsonl(directory / "transcript.jsonl")
    assert user_lines(directory) == [TURN, TURN, BARGE]
    assistants = [line for line in transcript if line["role"] == "assistant"]
    assert assistants[0]["text"] == REPLY
    assert any(line.get("interrupted") for line in assistants), assistants
    first = assistants[0]
    for stage in ("latency_ms", "llm_ttft_ms", "tts_ttfb_ms", "transport_ms"):
        assert isinstance(first.get(stage), int | float), (stage, first)
    meta = json.loads((directory / "metadata.json").read_text())
    stages = {
        k: first.get(k) for k in ("latency_ms", "endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms")
    }
    print(
        f"\n[{'/'.join(vendors.providers.values())}] first turn {stages}; "
        f"barge-in: caller speech → clear {barge_ms:.0f} ms; cost {meta['cost']}"
    )
    assert meta["agent"]["name"] == "support"
    for component in ("stt", "llm", "tts"):
        assert meta["cost"][component] > 0, (component, meta["cost"])
    events = read_jsonl(directory / "events.jsonl")
    usage = {(e["data"]["component"], e["data"]["provider"]) for e in events if e["type"] == "usage"}
    assert set(vendors.providers.items()) <= usage, usage
    assert "barge_in" in [e["type"] for e in events]
