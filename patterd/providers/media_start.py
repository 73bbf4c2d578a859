"""Read a carrier's media socket up to its stream-start message, for carriers whose leg needs what it names.

Every websocket carrier's first message carries what the rest of the stream depends on (a stream id to
answer on, the headers naming the call): the carrier reads up to it before building its `MediaLeg`. Frames
before it are dropped and counted (`before_start`), broken ones with their reason; a socket that
closes, goes silent or never starts within the timeout gives `StreamStopped`, so the call ends cleanly.
A start whose `call_id` parameter names another call than the socket's URL is refused (1008).
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.websockets import WebSocket

from patterd.errors import ProviderConnectionError
from patterd.protocols.events import MediaEvent, StreamStarted, StreamStopped
from patterd.protocols.frames import BadFrame
from patterd.protocols.media_codec import MediaCodec
from patterd.providers.kinds import CallRouter
from patterd.providers.media_socket import MediaSocket

log = structlog.get_logger("patterd.media")

POLICY_VIOLATION = 1008  # websocket close code for a refused media stream


async def await_start(
    frames: MediaSocket, codec: MediaCodec, *, timeout_secs: float, start: str
) -> MediaEvent:
    """The stream's StreamStarted (or StreamStopped); `start` names the message in logs and drop reasons."""
    try:
        async with asyncio.timeout(timeout_secs):
            while True:
                frame = await frames.receive()
                if frame is None:
                    return StreamStopped(f"disconnected before {start}")
                try:
                    events = codec.receive(frame)
                except BadFrame as exc:
                    frames.drop(exc.reason, str(exc))
                    continue
                except Exception as exc:  # a decoder bug must cost one frame, never the call
                    frames.drop("decoder_error", f"{type(exc).__name__}: {exc}")
                    continue
                for event in events:
                    if isinstance(event, StreamStarted | StreamStopped):
                        return event
                    frames.drop("before_start", f"{frames.carrier} {type(event).__name__} before {start}")
    except (TimeoutError, ProviderConnectionError):
        log.warning("media_no_start", carrier=frames.carrier, start=start, timeout_secs=timeout_secs)
        return StreamStopped(f"no {start} message")


async def refused_other_call(
    first: MediaEvent, call_id: str, frames: MediaSocket, websocket: WebSocket, router: CallRouter
) -> bool:
    """True, with the socket closed (1008) and counted, when the start's `call_id` names another call."""
    claimed = first.parameters.get("call_id") if isinstance(first, StreamStarted) else None
    if claimed is None or claimed == call_id:
        return False
    frames.stop()
    router.count_rejection(frames.carrier, "call_id_mismatch")
    log.warning(f"{frames.carrier}_media_call_id_mismatch", call_id=call_id, claimed=claimed)
    await websocket.close(POLICY_VIOLATION)
    return True
