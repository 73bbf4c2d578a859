"""Read a carrier's media socket up to its stream-start message, for carriers whose leg needs what it names.

Several carriers' first message carries what the rest of the stream depends on (a stream id to answer
on, the headers naming the call): the carrier reads up to it before building its `MediaLeg`. Frames
before it are dropped and counted (`before_start`), broken ones with their reason; a socket that
closes, goes silent or never starts within the timeout gives `StreamStopped`, so the call ends cleanly.
"""

from __future__ import annotations

import asyncio

import structlog

from patterd.errors import ProviderConnectionError
from patterd.protocols.events import MediaEvent, StreamStarted, StreamStopped
from patterd.protocols.frames import BadFrame
from patterd.protocols.media_codec import MediaCodec
from patterd.providers.media_socket import MediaSocket

log = structlog.get_logger("patterd.media")


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
