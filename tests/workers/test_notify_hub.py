"""The supervisor's notify socket: sd_notify datagrams arrive with the sender's pid from the kernel."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from patterd.sdnotify import Notifier
from patterd.workers.identity import RELOAD_PEERS, WorkerIdentity
from patterd.workers.notify_hub import NotifyHub, parse_lines


def test_lines_parse_and_malformed_ones_are_skipped() -> None:
    assert parse_lines(b"READY=1\nSTATUS=a=b\nnonsense\n=x\n\xff\xfe=1") == {
        "READY": "1",
        "STATUS": "a=b",
        "\ufffd\ufffd": "1",
    }


async def test_a_notifier_reaches_the_hub_with_its_pid(tmp_path: Path) -> None:
    got: asyncio.Queue[tuple[int, dict[str, str]]] = asyncio.Queue()
    hub = NotifyHub(tmp_path / "notify.sock", lambda pid, fields: got.put_nowait((pid, fields)))
    hub.start()
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        assert notifier.ready("serving")
        assert notifier.notify(RELOAD_PEERS)
        assert await asyncio.wait_for(got.get(), 5) == (os.getpid(), {"READY": "1", "STATUS": "serving"})
        assert await asyncio.wait_for(got.get(), 5) == (os.getpid(), {"PATTERD_RELOAD_PEERS": "1"})
    finally:
        hub.close()


def test_identity_from_the_environment(tmp_path: Path) -> None:
    assert WorkerIdentity.from_environ({}) is None
    assert WorkerIdentity.from_environ({"PATTERD_WORKER": "x", "PATTERD_RUN_DIR": "/r"}) is None
    me = WorkerIdentity.from_environ(
        {
            "PATTERD_WORKER": "2",
            "PATTERD_RUN_DIR": str(tmp_path),
            "PATTERD_WORKERS": "3",
            "PATTERD_SUPERVISOR_FD": "7",
        }
    )
    assert me == WorkerIdentity(2, tmp_path, 7, 3)
    assert me.http_socket == tmp_path / "worker-2.sock"
    assert me.siblings() == [(1, tmp_path / "worker-1.sock"), (3, tmp_path / "worker-3.sock")]
