"""daemon_wiring: the listening socket handed to Hypercorn is Hypercorn's alone."""

from __future__ import annotations

import os
import socket

from patterd.daemon_wiring import serving_binds


def test_the_listening_socket_is_handed_over_not_shared() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    fd = sock.fileno()
    try:
        assert serving_binds(sock, None) == [f"fd://{fd}"]
        # The daemon's object no longer owns the descriptor: freeing it cannot close it a second time,
        # after Hypercorn closed it and another socket took its number.
        assert sock.fileno() == -1
        del sock
        os.fstat(fd)  # still open: Hypercorn's to close
    finally:
        os.close(fd)
