"""Runs the real `patterd` process on a pre-bound loopback socket (no port races) for end-to-end tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT_SECS = 30.0
EOF_MARK = "\x00eof"


@dataclass
class DaemonProcess:
    """A running patterd; `lines` collects its stderr log lines (JSON) as they arrive."""

    proc: subprocess.Popen[str]
    base_url: str
    config_path: Path | None
    first_stdout_line: str
    token: str | None = None
    log_lines: list[str] = field(default_factory=list)
    _log_queue: queue.Queue[str] = field(default_factory=queue.Queue)

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        """One HTTP request; returns (status, parsed JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        bearer = token if token is not None else self.token
        if bearer:
            req.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status, ctype = resp.read(), resp.status, resp.headers.get("content-type", "")
        except urllib.error.HTTPError as err:
            raw, status, ctype = err.read(), err.code, err.headers.get("content-type", "")
        text = raw.decode("utf-8", "replace")
        return status, (json.loads(text) if "json" in ctype and text else text)

    def wait_log(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        """Wait for a JSON log line matching `predicate(dict)`; returns it."""
        deadline = time.monotonic() + timeout
        for line in list(self.log_lines):
            entry = _parse(line)
            if entry is not None and predicate(entry):
                return entry
        while time.monotonic() < deadline:
            try:
                line = self._log_queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            entry = _parse(line)
            if entry is not None and predicate(entry):
                return entry
        raise AssertionError(
            f"no matching log line within {timeout} s; last lines:\n" + "\n".join(self.log_lines[-20:])
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        """Send a signal and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def _parse(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


@contextmanager
def run_daemon(
    config_path: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    token: str | None = None,
    args: list[str] | None = None,
    cwd: Path | None = None,
    port: int = 0,
) -> Iterator[DaemonProcess]:
    """Start `patterd` with an inherited listening socket; stop it (SIGKILL if needed) on exit.

    `port` restarts a daemon on the port a stopped one had (0: any free port).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if port:  # the old connections may linger in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    cmd = [sys.executable, "-m", "patterd"]
    if config_path is not None:
        cmd += ["--config", str(config_path)]
    cmd += ["--bind", f"fd://{fd}", *(args or [])]
    inherited = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # a test may pass its own
    full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(fd,), env=full_env, cwd=cwd
    )
    sock.close()  # the child holds its own copy
    first: queue.Queue[str] = queue.Queue()
    daemon = DaemonProcess(proc, f"http://127.0.0.1:{port}", config_path, "", token=token)

    def pump_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            first.put(line.rstrip("\n"))
        first.put(EOF_MARK)  # the process closed stdout: it exited

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            daemon.log_lines.append(line.rstrip("\n"))
            daemon._log_queue.put(line.rstrip("\n"))

    threading.Thread(target=pump_stdout, daemon=True).start()
    threading.Thread(target=pump_stderr, daemon=True).start()
    try:
        try:
            daemon.first_stdout_line = first.get(timeout=START_TIMEOUT_SECS)
            if daemon.first_stdout_line == EOF_MARK:
                raise queue.Empty
        except queue.Empty:
            proc.kill()
            raise AssertionError("patterd did not start:\n" + "\n".join(daemon.log_lines[-30:])) from None
        yield daemon
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
