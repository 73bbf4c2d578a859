"""A protocol-faithful fake of the OpenAI Realtime GA websocket, scripted with data, on 127.0.0.1.

Follows the GA reference (developers.openai.com/api/reference/resources/realtime/client-events
and server-events) and openai-python `types/realtime/`: it checks `Authorization: Bearer`
(401 otherwise), refuses the retired `OpenAI-Beta` header, validates every client event
against a JSON Schema of the documented GA shape (a bad one gets an `error` event, like the
real server), runs an energy VAD on the decoded input audio (speech_started/stopped with
audio_start_ms/audio_end_ms, committed), "transcribes" from a scripted list, and answers each
response with the next scripted reply: speech (espeak-ng audio in the session's format, sent
faster than real time with transcript deltas) or a function call whose output it waits for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from patterd.protocols.audio import Resampler, pcm16_to_ulaw, rms_pcm16, ulaw_to_pcm16

# ------------------------------------------------------------------ script


@dataclass(frozen=True)
class Say:
    """Reply with speech: `text` rendered to audio plus its transcript."""

    text: str


@dataclass(frozen=True)
class CallTool:
    """Reply with a function call; the fake waits for its output and the next response.create."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


Reply = Say | CallTool

# ------------------------------------------------------------------ speech rendering

_render_lock = threading.Lock()
_render_cache: dict[str, bytes] = {}


def speak_pcm24(text: str) -> bytes:
    """`text` spoken by espeak-ng (once per text, cached), as 16-bit PCM at 24 kHz."""
    with _render_lock:
        cached = _render_cache.get(text)
        if cached is not None:
            return cached
        with tempfile.TemporaryDirectory() as tmp:
            wav_path = Path(tmp) / "say.wav"
            subprocess.run(
                ["espeak-ng", "-s", "190", "-w", str(wav_path), text], check=True, capture_output=True
            )
            import wave

            with wave.open(str(wav_path)) as wav:
                rate = wav.getframerate()
                pcm = wav.readframes(wav.getnframes())
        out = Resampler(rate, 24000, quality="HQ").process(pcm, last=True)
        _render_cache[text] = out
        return out


def pcm24_to_format(pcm24: bytes, fmt: str) -> bytes:
    """Audio in the session's output format."""
    if fmt == "audio/pcm":
        return pcm24
    return pcm16_to_ulaw(Resampler(24000, 8000, quality="HQ").process(pcm24, last=True))


# ------------------------------------------------------------------ client event schemas (GA)

# RealtimeAudioConfigOutput.voice: "Supported built-in voices are alloy, ash, ballad, coral, echo,
# sage, shimmer, verse, marin, and cedar", or a custom voice object {"id": "voice_..."}.
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")

_FORMAT = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"type": {"const": "audio/pcm"}, "rate": {"const": 24000}},
            "required": ["type"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"type": {"enum": ["audio/pcmu", "audio/pcma"]}},
            "required": ["type"],
            "additionalProperties": False,
        },
    ]
}
_TURN_DETECTION = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object",
            "properties": {
                "type": {"const": "server_vad"},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                "prefix_padding_ms": {"type": "integer", "minimum": 0},
                "silence_duration_ms": {"type": "integer", "minimum": 0},
                "create_response": {"type": "boolean"},
                "interrupt_response": {"type": "boolean"},
                "idle_timeout_ms": {"type": ["integer", "null"]},
            },
            "required": ["type"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "type": {"const": "semantic_vad"},
                "eagerness": {"enum": ["low", "medium", "high", "auto"]},
                "create_response": {"type": "boolean"},
                "interrupt_response": {"type": "boolean"},
            },
            "required": ["type"],
            "additionalProperties": False,
        },
    ]
}
_TOOL = {
    "type": "object",
    "properties": {
        "type": {"const": "function"},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "parameters": {"type": "object"},
    },
    "required": ["type", "name"],
    "additionalProperties": False,
}
_SESSION = {
    "type": "object",
    "properties": {
        "type": {"const": "realtime"},
        "model": {"type": "string"},
        "instructions": {"type": "string"},
        "output_modalities": {"type": "array", "items": {"enum": ["text", "audio"]}, "maxItems": 1},
        "audio": {
            "type": "object",
            "properties": {
                "input": {
                    "type": "object",
                    "properties": {
                        "format": _FORMAT,
                        "turn_detection": _TURN_DETECTION,
                        "transcription": {
                            "oneOf": [
                                {"type": "null"},
                                {
                                    "type": "object",
                                    "properties": {
                                        "model": {"type": "string"},
                                        "language": {"type": "string"},
                                        "prompt": {"type": "string"},
                                    },
                                    "additionalProperties": False,
                                },
                            ]
                        },
                        "noise_reduction": {"type": ["object", "null"]},
                    },
                    "additionalProperties": False,
                },
                "output": {
                    "type": "object",
                    "properties": {
                        "format": _FORMAT,
                        "voice": {"type": ["string", "object"]},
                        "speed": {"type": "number", "minimum": 0.25, "maximum": 1.5},
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
        "tools": {"type": "array", "items": _TOOL},
        "tool_choice": {"type": ["string", "object"]},
        "max_output_tokens": {"type": ["integer", "string"]},
        "tracing": {"type": ["string", "object", "null"]},
        "truncation": {"type": ["string", "object"]},
        "include": {"type": "array"},
        "prompt": {"type": ["object", "null"]},
    },
    "required": ["type"],
    "additionalProperties": False,
}


def _event(etype: str, properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"const": etype}, "event_id": {"type": "string"}, **properties},
        "required": ["type", *required],
        "additionalProperties": False,
    }


_ITEM = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "type": {"const": "function_call_output"},
                "call_id": {"type": "string"},
                "output": {"type": "string"},
                "id": {"type": "string"},
            },
            "required": ["type", "call_id", "output"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "type": {"const": "message"},
                "role": {"enum": ["user", "system", "assistant"]},
                "id": {"type": "string"},
                "content": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"enum": ["input_text", "input_audio", "output_text"]},
                            "text": {"type": "string"},
                            "audio": {"type": "string"},
                        },
                        "required": ["type"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["type", "role", "content"],
            "additionalProperties": False,
        },
    ]
}

CLIENT_EVENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "session.update": _event("session.update", {"session": _SESSION}, ["session"]),
    "input_audio_buffer.append": _event(
        "input_audio_buffer.append", {"audio": {"type": "string"}}, ["audio"]
    ),
    "input_audio_buffer.commit": _event("input_audio_buffer.commit", {}),
    "input_audio_buffer.clear": _event("input_audio_buffer.clear", {}),
    "conversation.item.create": _event(
        "conversation.item.create",
        {"item": _ITEM, "previous_item_id": {"type": ["string", "null"]}},
        ["item"],
    ),
    "conversation.item.truncate": _event(
        "conversation.item.truncate",
        {
            "item_id": {"type": "string"},
            "content_index": {"type": "integer", "minimum": 0},
            "audio_end_ms": {"type": "integer", "minimum": 0},
        },
        ["item_id", "content_index", "audio_end_ms"],
    ),
    "conversation.item.delete": _event(
        "conversation.item.delete", {"item_id": {"type": "string"}}, ["item_id"]
    ),
    "response.create": _event(
        "response.create",
        {
            "response": {
                "type": "object",
                "properties": {
                    "instructions": {"type": "string"},
                    "output_modalities": {"type": "array"},
                    "conversation": {"type": "string"},
                    "tool_choice": {"type": ["string", "object"]},
                    "tools": {"type": "array", "items": _TOOL},
                    "metadata": {"type": ["object", "null"]},
                    "max_output_tokens": {"type": ["integer", "string"]},
                    "input": {"type": "array"},
                    "audio": {"type": "object"},
                },
                "additionalProperties": False,
            }
        },
    ),
    "response.cancel": _event("response.cancel", {"response_id": {"type": "string"}}),
    "output_audio_buffer.clear": _event("output_audio_buffer.clear", {}),
}

USAGE = {
    "total_tokens": 230,
    "input_tokens": 150,
    "output_tokens": 80,
    "input_token_details": {
        "text_tokens": 110,
        "audio_tokens": 40,
        "image_tokens": 0,
        "cached_tokens": 64,
        "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0, "image_tokens": 0},
    },
    "output_token_details": {"text_tokens": 20, "audio_tokens": 60},
}

# ------------------------------------------------------------------ the server


@functools.cache
def _validator(etype: str) -> Any:
    """A checked validator per event type: `jsonschema.validate` re-checks the schema on every call
    (~200 ms for session.update, ~14 ms per audio frame), which made the fake the bottleneck."""
    schema = CLIENT_EVENT_SCHEMAS[etype]
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _same(audio: bytes) -> bytes:
    return audio


@dataclass
class _Response:
    id: str
    task: asyncio.Task[None] | None = None
    cancelled: bool = False


class _Session:
    """One websocket connection's Realtime session."""

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, index: int) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.input_format = "audio/pcm"
        self.output_format = "audio/pcm"
        self.turn_detection: dict[str, Any] | None = {
            "type": "server_vad",
            "silence_duration_ms": 500,
            "prefix_padding_ms": 300,
            "create_response": True,
            "interrupt_response": True,
        }
        self.transcription: dict[str, Any] | None = None
        self.audio_ms = 0.0  # all input audio so far, in ms
        self.pending = b""
        self.speech_frames = 0
        self.silence_ms = 0.0
        self.in_speech = False
        self.speech_item: str | None = None
        self.last_item: str | None = None
        self.active: _Response | None = None
        self.item_audio_ms: dict[str, float] = {}  # assistant item → ms of audio sent
        self.open_calls: set[str] = set()
        self.send_lock = asyncio.Lock()

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.server.new_id("event"))
        async with self.send_lock:
            await self.ws.send(json.dumps(event))
        self.server.sent.append(event)

    async def error(
        self, code: str, message: str, param: str | None = None, client_event_id: str | None = None
    ) -> None:
        body: dict[str, Any] = {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        }
        self.server.errors.append(body)
        await self.send({"type": "error", "error": body})

    # -------------------------------------------------------------- client events

    async def handle(self, raw: str | bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            await self.error("invalid_json", "We could not parse the JSON body of your request.")
            return
        self.server.received.append(event)
        self.server.notify()
        etype = event.get("type") if isinstance(event, dict) else None
        schema = CLIENT_EVENT_SCHEMAS.get(etype) if isinstance(etype, str) else None
        if schema is None or not isinstance(etype, str):
            await self.error(
                "invalid_event_type", f"Invalid value: '{etype}'. Supported values are: ...", "type"
            )
            return
        exc = jsonschema.exceptions.best_match(_validator(etype).iter_errors(event))
        if exc is not None:  # the error jsonschema.validate() would raise
            param = ".".join(str(p) for p in exc.absolute_path) or None
            await self.error(
                "invalid_value", f"Invalid '{etype}': {exc.message}", param, event.get("event_id")
            )
            return
        handler: Callable[[dict[str, Any]], Any] = getattr(self, "on_" + etype.replace(".", "_"))
        await handler(event)

    async def on_session_update(self, event: dict[str, Any]) -> None:
        session = event["session"]
        audio = session.get("audio", {})
        inp, out = audio.get("input", {}), audio.get("output", {})
        voice = out.get("voice")
        if isinstance(voice, str) and voice not in VOICES:
            # The API refuses the whole update (nothing of it applies) and names the client event.
            await self.error(
                "invalid_value",
                f"Invalid value: '{voice}'. Supported values are: {', '.join(repr(v) for v in VOICES)}.",
                "session.audio.output.voice",
                event.get("event_id"),
            )
            return
        if "format" in inp:
            self.input_format = inp["format"]["type"]
        if "format" in out:
            self.output_format = out["format"]["type"]
        if "turn_detection" in inp:
            self.turn_detection = inp["turn_detection"]
        if "transcription" in inp:
            self.transcription = inp["transcription"]
        self.server.sessions.append(session)
        await self.send({"type": "session.updated", "session": {"object": "realtime.session", **session}})

    async def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except ValueError:
            await self.error(
                "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio"
            )
            return
        self.server.audio_bytes_in += len(audio)
        pcm_in = self.input_format == "audio/pcm"
        frame_bytes = 960 if pcm_in else 160
        to_pcm: Callable[[bytes], bytes] = _same if pcm_in else ulaw_to_pcm16
        buf = self.pending + audio
        n = len(buf) - len(buf) % frame_bytes
        self.pending = buf[n:]
        for i in range(0, n, frame_bytes):
            await self.vad_frame(rms_pcm16(to_pcm(buf[i : i + frame_bytes])))

    async def vad_frame(self, rms: int) -> None:
        self.audio_ms += 20
        td = self.turn_detection
        if td is None:
            return
        loud = rms > self.server.vad_rms
        if not self.in_speech:
            self.speech_frames = self.speech_frames + 1 if loud else 0
            if self.speech_frames >= 3:
                self.in_speech, self.silence_ms = True, 0.0
                self.speech_item = self.server.new_id("item")
                start = max(0.0, self.audio_ms - 60 - td.get("prefix_padding_ms", 300))
                await self.send(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": int(start),
                        "item_id": self.speech_item,
                    }
                )
                if td.get("interrupt_response", True) and self.active is not None:
                    await self.cancel_active()
            return
        self.silence_ms = 0.0 if loud else self.silence_ms + 20
        if self.silence_ms >= td.get("silence_duration_ms", 500):
            self.in_speech, self.speech_frames = False, 0
            item_id = self.speech_item or self.server.new_id("item")
            end = self.audio_ms - self.silence_ms
            await self.send(
                {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(end), "item_id": item_id}
            )
            await self.send(
                {
                    "type": "input_audio_buffer.committed",
                    "item_id": item_id,
                    "previous_item_id": self.last_item,
                }
            )
            self.last_item = item_id
            if self.transcription is not None:
                transcript = self.server.next_transcript()
                self.server.user_turns.append(transcript)
                await self.send(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": item_id,
                        "content_index": 0,
                        "transcript": transcript,
                        "usage": {"type": "duration", "seconds": 1.0},
                    }
                )
            if td.get("create_response", True) and self.active is None:
                self.start_response(None)

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        self.pending = b""

    async def on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.pending = b""
        await self.send({"type": "input_audio_buffer.cleared"})

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = event["item"]
        if item["type"] == "function_call_output":
            if item["call_id"] not in self.open_calls:
                await self.error(
                    "invalid_value", f"No function call with call_id '{item['call_id']}'.", "item.call_id"
                )
                return
            self.open_calls.discard(item["call_id"])
            self.server.tool_outputs.append(item)
        else:
            text = item["content"][0].get("text", "")
            self.server.message_items.append((item["role"], text))
            if item["role"] == "user":
                self.server.user_texts.append(text)
                self.server.user_texts_by_connection.setdefault(self.index, []).append(text)
        item_id = item.get("id") or self.server.new_id("item")
        await self.send(
            {
                "type": "conversation.item.added",
                "previous_item_id": self.last_item,
                "item": {"id": item_id, **item},
            }
        )
        self.last_item = item_id
        self.server.notify()

    async def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end = event["item_id"], event["audio_end_ms"]
        sent = self.item_audio_ms.get(item_id)
        if sent is None:
            await self.error("invalid_value", f"Item '{item_id}' is not an assistant audio item.", "item_id")
            return
        if end > sent:
            await self.error(
                "invalid_value",
                f"audio_end_ms {end} exceeds the item's audio ({int(sent)} ms).",
                "audio_end_ms",
            )
            return
        self.server.truncates.append(event)
        self.server.notify()
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": event["content_index"],
                "audio_end_ms": end,
            }
        )

    async def on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        await self.send({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    async def on_response_create(self, event: dict[str, Any]) -> None:
        if self.active is not None:
            await self.error(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.active.id}.",
            )
            return
        instructions = event.get("response", {}).get("instructions")
        self.server.response_requests.append(instructions)
        self.start_response(instructions)

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        self.server.cancels += 1
        self.server.notify()
        if self.active is None:
            await self.error("response_cancel_not_active", "Cancellation failed: no active response found")
            return
        await self.cancel_active()

    async def on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        await self.send({"type": "output_audio_buffer.cleared"})

    # -------------------------------------------------------------- responses

    def start_response(self, instructions: str | None) -> None:
        resp = _Response(self.server.new_id("resp"))
        self.active = resp
        resp.task = asyncio.create_task(self.run_response(resp, self.server.next_reply()))

    async def cancel_active(self) -> None:
        if self.active is not None:
            self.active.cancelled = True
            self.server.server_cancels += 1

    async def run_response(self, resp: _Response, reply: Reply | None) -> None:
        try:
            await self.send(
                {
                    "type": "response.created",
                    "response": {
                        "id": resp.id,
                        "object": "realtime.response",
                        "status": "in_progress",
                        "output": [],
                    },
                }
            )
            output: list[dict[str, Any]] = []
            if isinstance(reply, Say):
                output.append(await self.speak(resp, reply.text))
            elif isinstance(reply, CallTool):
                output.append(await self.call(resp, reply))
            status = "cancelled" if resp.cancelled else "completed"
            self.active = None
            await self.send(
                {
                    "type": "response.done",
                    "response": {
                        "id": resp.id,
                        "object": "realtime.response",
                        "status": status,
                        "status_details": {"type": "cancelled", "reason": "turn_detected"}
                        if resp.cancelled
                        else None,
                        "output": output,
                        "usage": USAGE,
                    },
                }
            )
            self.server.responses_done += 1
            self.server.notify()
        except ConnectionClosed:
            pass

    async def speak(self, resp: _Response, text: str) -> dict[str, Any]:
        item_id = self.server.new_id("item")
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        await self.send(
            {"type": "response.output_item.added", "response_id": resp.id, "output_index": 0, "item": item}
        )
        await self.send(
            {
                "type": "response.content_part.added",
                "response_id": resp.id,
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "audio", "transcript": ""},
            }
        )
        pcm24 = await asyncio.to_thread(speak_pcm24, text)
        audio = pcm24_to_format(pcm24, self.output_format)
        bytes_per_ms = 48 if self.output_format == "audio/pcm" else 8
        chunk = self.server.chunk_ms * bytes_per_ms
        words = text.split()
        n_chunks = max(1, -(-len(audio) // chunk))
        self.item_audio_ms[item_id] = 0.0
        sent_words = 0
        ids = {"response_id": resp.id, "item_id": item_id, "output_index": 0, "content_index": 0}
        for k in range(n_chunks):
            if resp.cancelled:
                break
            piece = audio[k * chunk : (k + 1) * chunk]
            upto = len(words) * (k + 1) // n_chunks
            if upto > sent_words:
                delta = " ".join(words[sent_words:upto]) + (" " if upto < len(words) else "")
                sent_words = upto
                await self.send({"type": "response.output_audio_transcript.delta", **ids, "delta": delta})
            await self.send(
                {"type": "response.output_audio.delta", **ids, "delta": base64.b64encode(piece).decode()}
            )
            self.item_audio_ms[item_id] += len(piece) / bytes_per_ms
            await asyncio.sleep(self.server.chunk_ms / 1000 / self.server.pace)
        if not resp.cancelled:
            await self.send({"type": "response.output_audio.done", **ids})
            await self.send({"type": "response.output_audio_transcript.done", **ids, "transcript": text})
            await self.send(
                {"type": "response.content_part.done", **ids, "part": {"type": "audio", "transcript": text}}
            )
        status = "incomplete" if resp.cancelled else "completed"
        done = {**item, "status": status, "content": [{"type": "output_audio", "transcript": text}]}
        await self.send(
            {"type": "response.output_item.done", "response_id": resp.id, "output_index": 0, "item": done}
        )
        return done

    async def call(self, resp: _Response, reply: CallTool) -> dict[str, Any]:
        item_id, call_id = self.server.new_id("item"), self.server.new_id("call")
        arguments = json.dumps(reply.arguments)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": reply.name,
            "call_id": call_id,
            "arguments": "",
        }
        await self.send(
            {"type": "response.output_item.added", "response_id": resp.id, "output_index": 0, "item": item}
        )
        ids = {"response_id": resp.id, "item_id": item_id, "output_index": 0, "call_id": call_id}
        await self.send({"type": "response.function_call_arguments.delta", **ids, "delta": arguments})
        self.open_calls.add(call_id)
        await self.send(
            {
                "type": "response.function_call_arguments.done",
                **ids,
                "name": reply.name,
                "arguments": arguments,
            }
        )
        done = {**item, "status": "completed", "arguments": arguments}
        await self.send(
            {"type": "response.output_item.done", "response_id": resp.id, "output_index": 0, "item": done}
        )
        return done


class FakeRealtimeServer:
    """The fake server; `async with FakeRealtimeServer(replies=[...]) as fake: fake.url`."""

    def __init__(
        self,
        *,
        replies: Sequence[Reply] = (),
        transcripts: Sequence[str] = (),
        api_key: str = "sk-test",
        pace: float = 4.0,
        chunk_ms: int = 100,
        vad_rms: int = 300,
    ) -> None:
        self.replies = list(replies)
        self.transcripts = list(transcripts)
        self.api_key = api_key
        self.pace = pace
        self.chunk_ms = chunk_ms
        self.vad_rms = vad_rms
        self.refuse_status: int | None = None  # set to refuse every new handshake with this HTTP status
        self.refuse_next: list[int] = []  # one-shot: refuse the next handshakes with these statuses, in order
        self.connections = 0  # accepted websocket connections
        self.handshakes: list[Headers] = []
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.sessions: list[dict[str, Any]] = []
        self.truncates: list[dict[str, Any]] = []
        self.tool_outputs: list[dict[str, Any]] = []
        self.user_texts: list[str] = []
        self.user_texts_by_connection: dict[int, list[str]] = {}  # connection index → its user texts
        self.message_items: list[tuple[str, str]] = []  # (role, text) of every message item created
        self.user_turns: list[str] = []
        self.response_requests: list[str | None] = []
        self.cancels = 0  # response.cancel events received
        self.server_cancels = 0  # responses actually cancelled (by VAD or client)
        self.responses_done = 0
        self.audio_bytes_in = 0
        self._ids = itertools.count(1)
        self._live: set[ServerConnection] = set()
        self._by_index: dict[int, ServerConnection] = {}  # every connection by its 1-based accept order
        self._frozen: set[ServerConnection] = (
            set()
        )  # never read again: cut them at exit, no closing handshake
        self._server: Server | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/v1/realtime"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}"

    def next_reply(self) -> Reply | None:
        return self.replies.pop(0) if self.replies else None

    def next_transcript(self) -> str:
        return self.transcripts.pop(0) if self.transcripts else ""

    def notify(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds (re-checked whenever the fake's state changes)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def received_types(self) -> list[str]:
        return [str(e.get("type")) for e in self.received]

    async def drop_all(self) -> None:
        """Cut every live connection without a close frame, like a network failure."""
        for ws in list(self._live):
            ws.transport.abort()

    def freeze_all(self) -> None:
        """Stop reading every live connection: the link stays up but nothing answers, pings included
        (a peer that hangs, or a NAT that silently dropped the flow)."""
        for ws in list(self._live):
            ws.transport.pause_reading()
            self._frozen.add(ws)

    @property
    def live(self) -> int:
        """Connections whose handler is still running (frozen ones count until thawed or cut)."""
        return len(self._live)

    def drop(self, index: int) -> None:
        """Cut the `index`-th connection (1-based, in accept order) without a close frame."""
        self._by_index[index].transport.abort()

    def freeze(self, index: int) -> None:
        """Stop reading the `index`-th connection, like `freeze_all` does for every live one."""
        ws = self._by_index[index]
        ws.transport.pause_reading()
        self._frozen.add(ws)

    def thaw_all(self) -> None:
        """Read frozen connections again: what the client did meanwhile (a close, EOF) now arrives."""
        for ws in list(self._frozen):
            self._frozen.discard(ws)
            if not ws.transport.is_closing():
                ws.transport.resume_reading()

    async def inject(self, raw: str | bytes) -> None:
        """Send a raw frame (garbage, an unknown event) to every live connection."""
        for ws in list(self._live):
            await ws.send(raw)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(request.headers)
        if self.refuse_status is not None:
            return connection.respond(self.refuse_status, "service unavailable\n")
        if self.refuse_next:
            status = self.refuse_next.pop(0)
            code = "invalid_api_key" if status in (401, 403) else "server_error"
            return connection.respond(
                status, f'{{"error": {{"type": "invalid_request_error", "code": "{code}"}}}}\n'
            )
        if not request.path.startswith("/v1/realtime"):
            return connection.respond(404, "not found\n")
        if "OpenAI-Beta" in request.headers:
            return connection.respond(400, "The OpenAI-Beta realtime header selects the retired beta API.\n")
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return connection.respond(
                401, '{"error": {"type": "invalid_request_error", "code": "invalid_api_key"}}\n'
            )
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self._live.add(ws)
        self._by_index[self.connections] = ws
        session = _Session(self, ws, self.connections)
        self.notify()
        try:
            await session.send(
                {
                    "type": "session.created",
                    "session": {
                        "id": self.new_id("sess"),
                        "object": "realtime.session",
                        "type": "realtime",
                        "model": "gpt-realtime",
                        "output_modalities": ["audio"],
                        "instructions": "",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": session.turn_detection,
                            },
                            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
                        },
                    },
                }
            )
            async for raw in ws:
                await session.handle(raw)
        except ConnectionClosed:
            pass
        finally:
            self._live.discard(ws)
            if session.active is not None and session.active.task is not None:
                session.active.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await session.active.task
            self.notify()

    async def __aenter__(self) -> FakeRealtimeServer:
        self._server = await serve(
            self._handler, "127.0.0.1", 0, process_request=self._process_request, compression=None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for ws in self._frozen:
            ws.transport.abort()
        self._server.close()
        await self._server.wait_closed()


def tone_pcm24(ms: int, freq: float = 440.0, level: float = 0.3) -> bytes:
    """A sine tone as 24 kHz PCM (for tests that need audio without speech)."""
    t = np.arange(24 * ms) / 24000
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype("<i2").tobytes()
