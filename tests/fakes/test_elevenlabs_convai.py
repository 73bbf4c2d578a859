"""The fake ElevenLabs Agents server is faithful: the official `elevenlabs` SDK's Conversation client runs against it."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from elevenlabs.client import ElevenLabs
from elevenlabs.core.api_error import ApiError

from patterd.testing.audio import frames, silent_ulaw, voiced_ulaw
from tests.fakes.elevenlabs_convai import AGENT_ID, API_KEY, Agent, CallTool, FakeConvAIServer, Reply, Say

with warnings.catch_warnings():
    # The SDK module names websockets' deprecated WebSocketClientProtocol at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from elevenlabs.conversational_ai.conversation import (
        AudioInterface,
        ClientTools,
        Conversation,
        ConversationInitiationData,
        DisconnectionDetails,
    )

LONG = " ".join(["Your order has shipped and it arrives tomorrow morning."] * 3)


class Interface(AudioInterface):
    """The SDK's audio interface, recording what the agent said and when it was told to stop."""

    def __init__(self) -> None:
        self.send: Callable[[bytes], None] | None = None
        self.received = bytearray()
        self.interrupts = 0
        self.started = threading.Event()

    def start(self, input_callback: Callable[[bytes], None]) -> None:
        self.send = input_callback
        self.started.set()

    def stop(self) -> None:
        pass

    def output(self, audio: bytes) -> None:
        self.received += audio

    def interrupt(self) -> None:
        self.interrupts += 1


def talk(interface: Interface, ms: int, silence_ms: int) -> None:
    """The caller speaks through the SDK in real time (in a worker thread: the SDK is blocking)."""
    assert interface.send is not None
    for frame in frames(voiced_ulaw(ms) + silent_ulaw(silence_ms)):
        interface.send(frame)
        time.sleep(0.02)


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # the SDK changes state on its own thread
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_sdk_conversation_against_the_fake() -> None:
    agent = Agent(first_message="Hello, this is Acme.")
    replies: list[Reply] = [CallTool("lookup_order", {"order": "42"}), Say(LONG)]
    async with FakeConvAIServer(
        agent=agent, replies=replies, transcripts=["Where is my order?"], pace=3, ping_secs=0.2
    ) as fake:
        tools = ClientTools()
        tool_args: list[dict[str, Any]] = []

        def lookup_order(parameters: dict[str, Any]) -> str:
            tool_args.append(parameters)
            return "shipped"

        tools.register("lookup_order", lookup_order)
        interface = Interface()
        said: list[str] = []
        heard: list[str] = []
        client = ElevenLabs(api_key=API_KEY, base_url=fake.http_url)
        conversation = Conversation(
            client,
            AGENT_ID,
            requires_auth=True,  # a private agent: the SDK fetches a signed URL with xi-api-key
            audio_interface=interface,
            client_tools=tools,
            config=ConversationInitiationData(dynamic_variables={"customer": "Bob"}),
            callback_agent_response=said.append,
            callback_user_transcript=heard.append,
        )
        await asyncio.to_thread(conversation.start_session)
        try:
            await eventually(lambda: said == ["Hello, this is Acme."])
            await asyncio.to_thread(interface.started.wait, 5)
            await fake.wait_for(lambda: fake.replies_done == 1, timeout=10)
            await asyncio.to_thread(talk, interface, 600, 600)
            await eventually(lambda: len(said) == 2 and bool(interface.received))
            before = len(interface.received)
            await eventually(lambda: len(interface.received) > before + 4000)
            await asyncio.to_thread(talk, interface, 300, 100)  # talks over the long reply
            await eventually(lambda: interface.interrupts == 1)
            await fake.wait_for(lambda: len(fake.pong_ms) >= 2, timeout=5)
        finally:
            await asyncio.to_thread(conversation.end_session)
            await asyncio.to_thread(conversation.wait_for_session_end)
            tools.stop()  # type: ignore[no-untyped-call]
        assert fake.requests[:2] == [
            ("GET", "/v1/convai/conversation/get-signed-url"),
            ("WS", "/v1/convai/conversation"),
        ]
        assert fake.initiations[0]["dynamic_variables"] == {"customer": "Bob"}
        assert heard == ["Where is my order?"]
        assert tool_args == [{"tool_call_id": fake.tool_results[0]["tool_call_id"], "order": "42"}]
        assert fake.tool_results[0]["result"] == "shipped" and fake.tool_results[0]["is_error"] is False
        assert said[1] == LONG and fake.interruptions == 1
        assert fake.bad_pongs == 0 and fake.bad_audio == 0 and not fake.unknown_client
        assert fake.audio_bytes_in >= 160 * 50


async def test_fake_refuses_like_the_vendor() -> None:
    async with FakeConvAIServer(agent=Agent(allowed_overrides=frozenset())) as fake:
        bad = ElevenLabs(api_key="xi-wrong", base_url=fake.http_url)
        with pytest.raises(ApiError) as info:
            await asyncio.to_thread(bad.conversational_ai.conversations.get_signed_url, agent_id=AGENT_ID)
        assert info.value.status_code == 401
        good = ElevenLabs(api_key=API_KEY, base_url=fake.http_url)
        with pytest.raises(ApiError) as info:
            await asyncio.to_thread(good.conversational_ai.conversations.get_signed_url, agent_id="nope")
        assert info.value.status_code == 404
        signed = await asyncio.to_thread(
            good.conversational_ai.conversations.get_signed_url, agent_id=AGENT_ID
        )
        assert "conversation_signature=" in signed.signed_url

        async with aiohttp.ClientSession() as http:
            # A private agent without a signature (or key) is refused at the handshake.
            url = f"ws://127.0.0.1:{fake.port}/v1/convai/conversation?agent_id={AGENT_ID}"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(url)
            assert refused.value.status == 403
            # The signed URL works once.
            ws = await http.ws_connect(signed.signed_url)
            await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(signed.signed_url)

        # An override the agent does not allow ends the conversation with 1008, seen by the SDK.
        ended: list[DisconnectionDetails] = []
        conversation = Conversation(
            good,
            AGENT_ID,
            requires_auth=True,
            audio_interface=Interface(),
            config=ConversationInitiationData(
                conversation_config_override={"agent": {"first_message": "Hi"}}
            ),
            callback_disconnect=ended.append,
        )
        await asyncio.to_thread(conversation.start_session)
        await eventually(lambda: bool(ended))
        await asyncio.to_thread(conversation.wait_for_session_end)
        assert ended[0].close_code == 1008 and "first_message" in (ended[0].close_reason or "")
        assert fake.initiations == []
