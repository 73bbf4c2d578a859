"""The Hypercorn settings the one app is served with: the edge before the app, and the sockets."""

from __future__ import annotations

import logging

from hypercorn.config import Config as HypercornConfig

from patterd.protocols.frames import MAX_WEBSOCKET_MESSAGE_BYTES

HYPERCORN_GRACE_SECS = 5.0
MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_SECS = 5.0


def hypercorn_config(binds: list[str]) -> HypercornConfig:
    """Hypercorn's config for `binds` (`fd://N` of sockets bound before: no port races, READY after bind)."""
    hyper = HypercornConfig()
    hyper.bind = binds
    hyper.graceful_timeout = HYPERCORN_GRACE_SECS
    # The edge before the app (web.limits guards bodies): a request's headers must fit in 16 KB, and
    # a connection idle before or between requests is closed after 5 s. `read_timeout` (silence on
    # a socket) stays off: a live-feed (SSE) client sends nothing for as long as it listens.
    hyper.h11_max_incomplete_size = MAX_HEADER_BYTES
    hyper.keep_alive_timeout = KEEP_ALIVE_SECS
    # A websocket message above this closes its socket (1009); smaller oversized media frames are
    # dropped by the carrier leg and the call goes on (protocols.frames).
    hyper.websocket_max_message_size = MAX_WEBSOCKET_MESSAGE_BYTES
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")  # through structlog's formatter
    return hyper
