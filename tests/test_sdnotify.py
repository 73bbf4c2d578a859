"""Tests for patterd.sdnotify against real unix datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from patterd.sdnotify import Notifier, listen_fds


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(5)
        yield sock, address


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"patterd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield sock, "@" + name


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_stopping_over_a_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("serving on 127.0.0.1:8000")
    assert receive(sock) == ["READY=1", "STATUS=serving on 127.0.0.1:8000"]
    assert notifier.status("2 live calls\ndraining")
    assert receive(sock) == ["STATUS=2 live calls draining"]
    assert notifier.stopping()
    assert receive(sock) == ["STOPPING=1"]
    assert notifier.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]
    assert notifier.extend_timeout(2.5)
    assert receive(sock) == ["EXTEND_TIMEOUT_USEC=2500000"]


def test_reloading_carries_the_monotonic_clock(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic = receive(sock)
    assert reloading == "RELOADING=1"
    key, value = monotonic.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert notifier.ready()
    assert receive(sock) == ["READY=1"]


def test_no_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.reloading()
    assert notifier.watchdog_interval() is None


def test_a_gone_manager_never_raises(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert notifier.enabled
    assert not notifier.ready()
    assert not notifier.stopping()


def test_unsupported_socket_kind_is_ignored() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_watchdog_interval() -> None:
    me = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval() == 30.0
    assert Notifier({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": me}).watchdog_interval() == 0.5
    assert Notifier({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval() is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval() is None


def test_listen_fds_environment_handling() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0", "LISTEN_FDNAMES": "web"}
    assert listen_fds(env) == []
    assert env == {}  # unset so child processes do not claim the sockets
    assert listen_fds({"LISTEN_PID": "1", "LISTEN_FDS": "1"}) == []
    assert listen_fds({"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "x"}) == []


# Runs in a child process so that taking over fd 3 cannot disturb pytest's own descriptors.
CHILD = """
import os, socket
from patterd.sdnotify import listen_fds
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
os.dup2(listener.fileno(), 3)
env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
fds = listen_fds(env, unset=False)
inherited = socket.socket(fileno=os.dup(fds[0]))
assert inherited.getsockname() == listener.getsockname(), inherited
assert not os.get_inheritable(3)
print(fds, env["LISTEN_FDS"])
"""


def test_listen_fds_returns_fd_3_up() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[3] 1"
