"""Fake controllers and Setups that run the built-in providers through patterd.testing against tests/fakes."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from patterd.protocols.audio import wav_to_ulaw8k
from patterd.providers import offline_stt, offline_tts, openai_llm, openai_realtime
from patterd.providers.kinds import LLM, STT, TTS, Engine
from patterd.providers.offline_stt import OfflineSTTOptions
from patterd.providers.offline_tts import OfflineTTSOptions
from patterd.providers.openai_realtime import OpenAIRealtimeOptions
from patterd.providers.spec import BuildContext
from patterd.testing import Setup
from patterd.testing.stt import UTTERANCE
from tests.fakes.openai_chat import FakeChatServer, Reply
from tests.fakes.openai_realtime import FakeRealtimeServer, Say


class ChatControl:
    """LLMControl over FakeChatServer."""

    def __init__(self, fake: FakeChatServer) -> None:
        self.fake = fake
        self._drop = False
        self._stall = False

    def queue_reply(self, text: str) -> None:
        # A dropped reply is cut after its third chunk: the client has started reading text.
        # A stalled one gets no answer at all until the fake shuts down.
        self.fake.replies.append(
            Reply(text=text, disconnect_after=3 if self._drop else None, stall=self._stall)
        )
        self._drop = self._stall = False

    def stall_next(self) -> None:
        self._stall = True

    def fail_next(self, status: int) -> None:
        self.fake.fail_next(status)

    def drop_next(self) -> None:
        self._drop = True

    def open_connections(self) -> int:
        return self.fake.open_connections()

    def active_streams(self) -> int:
        return self.fake.active_streams()


@asynccontextmanager
async def openai_llm_setup() -> AsyncIterator[Setup[LLM, ChatControl]]:
    """`llm.openai` against the fake Chat Completions server."""
    async with FakeChatServer() as fake:

        def build(key: str = "sk-test") -> openai_llm.Options:
            return openai_llm.Options(api_key=key, base_url=fake.base_url, timeout_secs=1.0)

        yield Setup(
            provider="openai",
            key_variable="OPENAI_API_KEY",
            build=lambda: openai_llm.build(build(), BuildContext()),
            build_bad_key=lambda: openai_llm.build(build("sk-wrong"), BuildContext()),
            control=ChatControl(fake),
            check=openai_llm.check,
            secrets=("sk-test", "sk-wrong"),
        )


class RealtimeControl:
    """EngineControl over FakeRealtimeServer."""

    def __init__(self, fake: FakeRealtimeServer) -> None:
        self.fake = fake

    def queue_reply(self, text: str) -> None:
        self.fake.replies.append(Say(text))

    def fail_next(self, status: int) -> None:
        self.fake.refuse_next.append(status)

    def drop_live(self) -> None:
        for index in range(1, self.fake.connections + 1):
            with contextlib.suppress(KeyError):
                self.fake.drop(index)

    def ready_sessions(self) -> int:
        return len(self.fake.sessions)

    def open_connections(self) -> int:
        return self.fake.live


@asynccontextmanager
async def openai_realtime_setup() -> AsyncIterator[Setup[Engine, RealtimeControl]]:
    """`engine.openai_realtime` against the fake Realtime server (real-time-paced x20 replies)."""
    async with FakeRealtimeServer(pace=20) as fake:

        def options(key: str = "sk-test") -> OpenAIRealtimeOptions:
            return OpenAIRealtimeOptions(api_key=key, base_url=fake.url, retry_backoff_secs=0.01)

        yield Setup(
            provider="openai_realtime",
            key_variable="OPENAI_API_KEY",
            build=lambda: openai_realtime.build(options(), BuildContext()),
            build_bad_key=lambda: openai_realtime.build(options("sk-wrong"), BuildContext()),
            control=RealtimeControl(fake),
            secrets=("sk-test", "sk-wrong"),
            check=openai_realtime.check,
            features=frozenset({"barge_in_by_audio"}),
        )


class SpokenControl:
    """STTControl for a local recognizer: the queued text is spoken by espeak-ng, nothing to fail or count."""

    def __init__(self) -> None:
        self._speech: dict[str, bytes] = {}

    def queue_transcript(self, text: str, interim: Sequence[str] = ()) -> None:
        self.speech_for(text)  # spoken now, outside the timed part of the case

    def speech_for(self, text: str) -> bytes:
        if text not in self._speech:
            wav = subprocess.run(
                ["espeak-ng", "--stdout", "-s", "150", text], check=True, capture_output=True
            )
            self._speech[text] = wav_to_ulaw8k(wav.stdout)
        return self._speech[text]


@asynccontextmanager
async def offline_stt_setup() -> AsyncIterator[Setup[STT, SpokenControl]]:
    """`stt.offline` (pocketsphinx) with the suite's sentence as its grammar, fed espeak-ng speech."""
    options = OfflineSTTOptions(mode="grammar", phrases=[UTTERANCE], endpointing_ms=400)
    yield Setup(
        provider="offline",
        key_variable=None,
        build=lambda: offline_stt.build(options, BuildContext()),
        control=SpokenControl(),
        features=frozenset({"interim", "endpointing"}),
        free=True,
    )


@asynccontextmanager
async def offline_tts_setup() -> AsyncIterator[Setup[TTS, object]]:
    """`tts.offline` (espeak-ng): no vendor, so only the audio and cancel cases apply."""
    yield Setup(
        provider="offline",
        key_variable=None,
        build=lambda: offline_tts.build(OfflineTTSOptions(), BuildContext()),
        control=object(),
        free=True,
    )
