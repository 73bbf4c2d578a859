"""Sans-I/O codec for ElevenLabs Conversational AI (Agents): URLs, client messages out, server events in.

Followed: the elevenlabs-python SDK `conversational_ai/conversation.py` (initiation message,
`user_audio_chunk`, `pong`, `client_tool_result`, `user_message`, the `<type>_event` objects of
server messages, dropping `audio` whose event_id is at or below the last `interruption`),
`types/conversation_config_client_override_input.py` (agent.prompt.prompt, agent.first_message,
agent.language, tts.voice_id), `types/{asr_input_format,tts_output_format}.py` (audio formats,
set on the agent and reported in `conversation_initiation_metadata`, not overridable) and
`conversations/raw_client.py` (`GET /v1/convai/conversation/get-signed-url?agent_id=` → signed_url).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from patterd.errors import ProviderProtocolError
from patterd.protocols.jsontext import JSONError, clean_text, loads

PROVIDER = "elevenlabs_convai"
ULAW_8000 = "ulaw_8000"
# AsrInputFormat / TtsOutputFormat: the formats an agent can be set to.
FORMATS = ("ulaw_8000", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000")
# Server message types the engine reads nothing from (kept apart from unknown ones for the counters).
OTHER_EVENT_TYPES = frozenset(
    {
        "vad_score",
        "internal_tentative_agent_response",
        "agent_tool_response",
        "agent_chat_response_part",
        "mcp_tool_call",
        "mcp_connection_status",
        "contextual_update",
        "audio_alignment",
    }
)


class ConvAIProtocolError(ProviderProtocolError):
    """A server frame is not JSON, or lacks a field its type requires."""

    def __init__(self, message: str) -> None:
        super().__init__(message, provider=PROVIDER)


# ------------------------------------------------------------------ URLs


def ws_base(base_url: str) -> str:
    """The websocket origin for an HTTP base URL (https → wss, http → ws)."""
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url


def conversation_url(base_url: str, agent_id: str) -> str:
    """The conversation websocket of a public agent (or one reached with the `xi-api-key` header)."""
    return f"{ws_base(base_url.rstrip('/'))}/v1/convai/conversation?agent_id={quote(agent_id, safe='')}"


def signed_url_request(base_url: str, agent_id: str) -> str:
    """`GET` this with `xi-api-key` for a private agent's signed conversation URL."""
    return f"{base_url.rstrip('/')}/v1/convai/conversation/get-signed-url?agent_id={quote(agent_id, safe='')}"


def agent_request(base_url: str, agent_id: str) -> str:
    """`GET` this with `xi-api-key` for the agent's configuration (its audio formats)."""
    return f"{base_url.rstrip('/')}/v1/convai/agents/{quote(agent_id, safe='')}"


def parse_signed_url(body: str | bytes) -> str:
    """The `signed_url` of a get-signed-url answer."""
    data = _object(body, "get-signed-url answer")
    url = data.get("signed_url")
    if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
        raise ConvAIProtocolError(f"get-signed-url answered without a websocket signed_url: {url!r}")
    return url


@dataclass(frozen=True, slots=True)
class AgentFormats:
    """An agent's configured audio formats (None: not stated, the vendor default pcm_16000)."""

    user_input: str | None
    agent_output: str | None

    def problems(self) -> list[str]:
        """What `check --probe` warns about: formats that cost a transcode on every frame."""
        out = []
        if self.user_input != ULAW_8000:
            out.append(f"asr.user_input_audio_format is {self.user_input or 'the default (pcm_16000)'}")
        if self.agent_output != ULAW_8000:
            out.append(f"tts.agent_output_audio_format is {self.agent_output or 'the default (pcm_16000)'}")
        return out


def parse_agent_formats(body: str | bytes) -> AgentFormats:
    """The audio formats in a `GET /v1/convai/agents/{id}` answer (conversation_config.asr / .tts)."""
    data = _object(body, "agent configuration")
    config = data.get("conversation_config")
    config = config if isinstance(config, dict) else {}
    asr, tts = config.get("asr"), config.get("tts")
    user = asr.get("user_input_audio_format") if isinstance(asr, dict) else None
    agent = tts.get("agent_output_audio_format") if isinstance(tts, dict) else None
    return AgentFormats(user if isinstance(user, str) else None, agent if isinstance(agent, str) else None)


def sample_rate(fmt: str) -> int:
    """The sample rate of a format name (`ulaw_8000` → 8000); ValueError for one we cannot play."""
    if fmt not in FORMATS:
        raise ValueError(f"audio format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return int(fmt.rsplit("_", 1)[1])


# ------------------------------------------------------------------ client messages


def initiation(
    *,
    prompt: str | None = None,
    first_message: str | None = None,
    language: str | None = None,
    voice_id: str | None = None,
    dynamic_variables: Mapping[str, str] | None = None,
) -> str:
    """`conversation_initiation_client_data`, the first frame: overrides (only those given) and variables.

    Overrides work only when the agent allows each of them (its security settings); a refused
    one closes the socket, so nothing is sent that the configuration did not ask for.
    """
    agent: dict[str, Any] = {}
    if prompt:
        agent["prompt"] = {"prompt": prompt}
    if first_message is not None:
        agent["first_message"] = first_message
    if language:
        agent["language"] = language
    override: dict[str, Any] = {}
    if agent:
        override["agent"] = agent
    if voice_id:
        override["tts"] = {"voice_id": voice_id}
    message: dict[str, Any] = {"type": "conversation_initiation_client_data"}
    if override:
        message["conversation_config_override"] = override
    if dynamic_variables:
        message["dynamic_variables"] = dict(dynamic_variables)
    return json.dumps(message)


def user_audio_chunk(audio: bytes) -> str:
    """Caller audio in the agent's input format (hot path: base64 needs no JSON escaping)."""
    return '{"user_audio_chunk":"' + base64.b64encode(audio).decode("ascii") + '"}'


USER_AUDIO_PREFIX = '{"user_audio_chunk":'


def pong(event_id: int) -> str:
    """The answer to a `ping` (the server ends a conversation whose pings go unanswered)."""
    return json.dumps({"type": "pong", "event_id": event_id})


def client_tool_result(tool_call_id: str, result: str, *, is_error: bool = False) -> str:
    """A client tool's result for the agent."""
    return json.dumps(
        {"type": "client_tool_result", "tool_call_id": tool_call_id, "result": result, "is_error": is_error}
    )


def user_message(text: str) -> str:
    """Caller text the agent answers as if spoken (DTMF, typed input)."""
    return json.dumps({"type": "user_message", "text": text})


def contextual_update(text: str) -> str:
    """Background information for the agent that asks for no answer."""
    return json.dumps({"type": "contextual_update", "text": text})


# ------------------------------------------------------------------ server events


@dataclass(frozen=True, slots=True)
class Metadata:
    """`conversation_initiation_metadata`: the conversation started, in these audio formats."""

    conversation_id: str
    agent_output_audio_format: str
    user_input_audio_format: str


@dataclass(frozen=True, slots=True)
class Audio:
    """A chunk of the agent's speech in the output format."""

    event_id: int
    audio: bytes


@dataclass(frozen=True, slots=True)
class Interruption:
    """The caller spoke over the agent: audio with event_id ≤ this one must not be played."""

    event_id: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ping:
    """A keepalive the client must answer with `pong` and the same event_id."""

    event_id: int
    ping_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AgentResponse:
    """The text of the agent's reply."""

    text: str


@dataclass(frozen=True, slots=True)
class AgentResponseCorrection:
    """An interrupted reply's text cut to what was said."""

    original: str
    corrected: str


@dataclass(frozen=True, slots=True)
class UserTranscript:
    """The caller's turn, transcribed (the server ended the turn)."""

    text: str


@dataclass(frozen=True, slots=True)
class ClientToolCall:
    """The agent calls a client tool; answer with `client_tool_result`."""

    tool_name: str
    tool_call_id: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """A documented message the engine does not act on (vad_score, tentative responses, ...)."""

    type: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A message type this codec does not know; kept so the caller can log and count it."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


ServerEvent = (
    Metadata
    | Audio
    | Interruption
    | Ping
    | AgentResponse
    | AgentResponseCorrection
    | UserTranscript
    | ClientToolCall
    | OtherEvent
    | UnknownEvent
)


def _object(body: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = loads(body)
    except JSONError as exc:
        raise ConvAIProtocolError(f"{what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConvAIProtocolError(f"{what} is a {type(data).__name__}, expected a JSON object")
    return data


def _event(data: dict[str, Any], etype: str, key: str | None = None) -> dict[str, Any]:
    body = data.get(key or f"{etype}_event")
    if not isinstance(body, dict):
        raise ConvAIProtocolError(f"{etype} without its {key or etype + '_event'} object")
    return body


def _str(body: Mapping[str, Any], key: str, etype: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ConvAIProtocolError(f"{etype}.{key} is {type(value).__name__}, expected a string")
    return value


def _event_id(body: Mapping[str, Any], etype: str) -> int:
    value = body.get("event_id")
    # The SDK reads int(event["event_id"]); the server sends a number.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConvAIProtocolError(f"{etype}.event_id is {value!r}, expected an integer")
    try:
        return int(value)
    except ValueError:
        raise ConvAIProtocolError(f"{etype}.event_id is {value!r}, expected an integer") from None


def parse_server_event(text: str | bytes) -> ServerEvent:
    """Parse one server frame; unknown types become UnknownEvent, malformed ones raise ConvAIProtocolError."""
    data = _object(text, "server frame")
    etype = data.get("type")
    if not isinstance(etype, str):
        raise ConvAIProtocolError(f"server frame has type {etype!r}, expected a string")
    if etype == "audio":
        body = _event(data, etype)
        try:
            audio = base64.b64decode(_str(body, "audio_base_64", etype), validate=True)
        except (binascii.Error, ValueError):
            raise ConvAIProtocolError("audio.audio_base_64 is not base64") from None
        return Audio(_event_id(body, etype), audio)
    if etype == "ping":
        body = _event(data, etype)
        ping_ms = body.get("ping_ms")
        return Ping(_event_id(body, etype), ping_ms if isinstance(ping_ms, int) else None)
    if etype == "interruption":
        body = _event(data, etype)
        reason = body.get("reason")
        return Interruption(_event_id(body, etype), reason if isinstance(reason, str) else "")
    if etype == "agent_response":
        return AgentResponse(clean_text(_str(_event(data, etype), "agent_response", etype)))
    if etype == "agent_response_correction":
        body = _event(data, etype)
        return AgentResponseCorrection(
            _str(body, "original_agent_response", etype), _str(body, "corrected_agent_response", etype)
        )
    if etype == "user_transcript":
        # The SDK reads `user_transcription_event` (not `user_transcript_event`).
        return UserTranscript(_str(_event(data, etype, "user_transcription_event"), "user_transcript", etype))
    if etype == "client_tool_call":
        body = _event(data, etype, "client_tool_call")
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ConvAIProtocolError(f"client_tool_call.parameters is {type(parameters).__name__}")
        return ClientToolCall(_str(body, "tool_name", etype), _str(body, "tool_call_id", etype), parameters)
    if etype == "conversation_initiation_metadata":
        body = _event(data, etype)
        out_fmt = body.get("agent_output_audio_format")
        in_fmt = body.get("user_input_audio_format")
        return Metadata(
            _str(body, "conversation_id", etype),
            out_fmt if isinstance(out_fmt, str) else "pcm_16000",
            in_fmt if isinstance(in_fmt, str) else "pcm_16000",
        )
    if etype in OTHER_EVENT_TYPES:
        return OtherEvent(etype)
    return UnknownEvent(etype, data)
