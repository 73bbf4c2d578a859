"""Tests for the tunnel providers, with a fake `cloudflared` executable that logs like the real one."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from patterd.errors import ProviderConnectionError, ProviderError
from patterd.providers.spec import BuildContext
from patterd.providers.tunnels import (
    CLOUDFLARED,
    STATIC,
    CloudflaredOptions,
    CloudflaredTunnel,
    StaticOptions,
)

# Prints what cloudflared 2024.x prints on stderr for a quick tunnel (zerolog console lines,
# the URL inside AsciiBox from cmd/cloudflared/tunnel/quick_tunnel.go) and serves nothing.
# FAKE_CF_MODE: serve | die_first | fail | silent | ignore_term | named. Each run records its
# argv and environment in FAKE_CF_DIR/run-N.json and a SIGTERM in run-N.terminated.
FAKE_CLOUDFLARED = r"""
import json, os, signal, sys, time

folder = os.environ["FAKE_CF_DIR"]
mode = os.environ.get("FAKE_CF_MODE", "serve")
run = len([n for n in os.listdir(folder) if n.endswith(".json")]) + 1
record = os.path.join(folder, f"run-{run}")
with open(record + ".json", "w") as f:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid(), "env": dict(os.environ)}, f)

def on_term(signum, frame):
    open(record + ".terminated", "w").close()
    log("INF", "Initiating graceful shutdown due to signal terminated ...")
    sys.exit(0)

signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore_term" else on_term)

def log(level, message):
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sys.stderr.write(f"{stamp} {level} {message}\n")
    sys.stderr.flush()

def box(lines, padding=2):
    width = max(len(line) for line in lines)
    border = "+" + "-" * (width + 2 * padding) + "+"
    spacer = " " * padding
    return [border] + ["|" + spacer + line + " " * (width - len(line)) + spacer + "|" for line in lines] + [border]

if mode == "silent":
    signal.pause()
if mode == "named":
    log("INF", "Starting tunnel tunnelID=2c4b5f9e-0000-4000-8000-000000000000")
    log("INF", "Version 2024.6.1")
    log("INF", "Registered tunnel connection connIndex=0 connection=a1b2 event=0 ip=198.41.200.13 location=ams01 protocol=quic")
    signal.pause()
log("INF", "Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way to "
    "experiment and try it out. However, be aware that these account-less Tunnels have no uptime guarantee, are "
    "subject to the Cloudflare Online Services Terms of Use (https://www.cloudflare.com/website-terms/)")
log("INF", "Requesting new quick Tunnel on trycloudflare.com...")
if mode == "fail":
    log("ERR", 'failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp: lookup api.trycloudflare.com: no such host')
    sys.exit(1)
url = f"https://fake-run-{run}-words.trycloudflare.com"
for line in box(["Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):", url]):
    log("INF", line)
log("INF", "Cannot determine default configuration path. No file [config.yml config.yaml] in [~/.cloudflared]")
log("INF", "Version 2024.6.1")
if mode == "die_first" and run == 1:
    log("ERR", "Serve tunnel error error=\"connection reset\"")
    sys.exit(3)
log("INF", f"Registered tunnel connection connIndex=0 connection=c{run} event=0 ip=198.41.200.13 location=ams01 protocol=quic")
while True:
    signal.pause()
"""

LOCAL = BuildContext(extra={"local_url": "http://127.0.0.1:8123"})


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Path of the fake cloudflared; its records go to tmp_path/runs."""
    runs = tmp_path / "runs"
    runs.mkdir()
    binary = tmp_path / "bin" / "cloudflared"
    binary.parent.mkdir()
    binary.write_text(f"#!{sys.executable}\n{FAKE_CLOUDFLARED}")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_CF_DIR", str(runs))
    return binary


def runs(fake: Path) -> list[dict[str, object]]:
    folder = fake.parent.parent / "runs"
    return [
        json.loads((folder / f"run-{n}.json").read_text())
        for n in range(1, len(list(folder.glob("*.json"))) + 1)
    ]


def terminated(fake: Path, run: int) -> bool:
    return (fake.parent.parent / "runs" / f"run-{run}.terminated").exists()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def options(fake: Path, **more: object) -> CloudflaredOptions:
    return CloudflaredOptions.model_validate({"binary": str(fake), **more})


async def test_quick_tunnel_url_is_parsed_and_child_terminated(fake: Path) -> None:
    async with CLOUDFLARED.build(options(fake, extra_args=["--protocol", "http2"]), LOCAL) as tunnel:
        assert tunnel.public_host == "fake-run-1-words.trycloudflare.com"
        assert tunnel.connected
        assert CLOUDFLARED.check is not None
        await CLOUDFLARED.check(tunnel)
        pid = tunnel.pid
        assert pid is not None
    (run,) = runs(fake)
    assert run["argv"] == [
        "tunnel",
        "--no-autoupdate",
        "--url",
        "http://127.0.0.1:8123",
        "--protocol",
        "http2",
    ]
    assert terminated(fake, 1)  # SIGTERM first, handled by the child
    assert gone(pid)


async def test_restart_after_death_reports_the_new_host(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CF_MODE", "die_first")
    changed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    seen_async: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def async_subscriber(host: str) -> None:
        seen_async.set_result(host)

    def subscriber(host: str) -> None:
        changed.set_result(host)

    # Subscribed before start, so the restart cannot slip past the test.
    tunnel = CloudflaredTunnel(options(fake, restart_backoff_secs=0.01), "http://127.0.0.1:8123")
    tunnel.subscribe(subscriber)
    tunnel.subscribe(async_subscriber)
    await tunnel.start()
    try:
        assert await asyncio.wait_for(changed, 10) == "fake-run-2-words.trycloudflare.com"
        assert await asyncio.wait_for(seen_async, 10) == "fake-run-2-words.trycloudflare.com"
        assert tunnel.public_host == "fake-run-2-words.trycloudflare.com"
        assert tunnel.restarts == 1
    finally:
        await tunnel.close()
    assert len(runs(fake)) == 2
    assert terminated(fake, 2)


async def test_unsubscribe(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CF_MODE", "die_first")
    calls: list[str] = []
    changed = asyncio.Event()
    tunnel = CloudflaredTunnel(options(fake, restart_backoff_secs=0.01), "http://127.0.0.1:8123")
    unsubscribe = tunnel.subscribe(calls.append)
    tunnel.subscribe(lambda host: changed.set())
    unsubscribe()
    await tunnel.start()
    try:
        await asyncio.wait_for(changed.wait(), 10)
    finally:
        await tunnel.close()
    assert calls == []


async def test_child_dying_before_the_tunnel_is_up_fails_the_build(
    fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CF_MODE", "fail")
    with pytest.raises(
        ProviderConnectionError, match="exited with status 1 before the tunnel was up"
    ) as caught:
        async with CLOUDFLARED.build(options(fake), LOCAL):
            pytest.fail("built")
    assert "failed to request quick Tunnel" in str(caught.value)  # the child's last words are shown


async def test_no_url_in_time_fails_and_stops_the_child(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CF_MODE", "silent")
    with pytest.raises(ProviderConnectionError, match=r"no tunnel after 0\.3 s"):
        async with CLOUDFLARED.build(options(fake, start_timeout_secs=0.3), LOCAL):
            pytest.fail("built")
    (run,) = runs(fake)
    assert terminated(fake, 1)
    assert gone(int(str(run["pid"])))


async def test_child_ignoring_sigterm_is_killed(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CF_MODE", "ignore_term")
    tunnel = CloudflaredTunnel(options(fake), "http://127.0.0.1:8123", stop_timeout_secs=0.2)
    await tunnel.start()
    pid = tunnel.pid
    assert pid is not None
    await tunnel.close()
    assert gone(pid)
    assert not terminated(fake, 1)


async def test_named_tunnel_gets_the_token_by_environment(
    fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CF_MODE", "named")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("TUNNEL_TOKEN", "stray")
    opts = options(fake, token="eyJhIjoi-secret", hostname="https://voice.example.com/")
    async with CLOUDFLARED.build(opts, BuildContext()) as tunnel:
        assert tunnel.public_host == "voice.example.com"
        assert tunnel.connected
    (run,) = runs(fake)
    assert run["argv"] == ["tunnel", "--no-autoupdate", "run"]
    env = run["env"]
    assert isinstance(env, dict)
    assert env["TUNNEL_TOKEN"] == "eyJhIjoi-secret"
    assert "NOTIFY_SOCKET" not in env  # systemd notifications are patterd's alone


async def test_quick_tunnel_drops_a_stray_token(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNNEL_TOKEN", "stray")
    async with CLOUDFLARED.build(options(fake), LOCAL):
        pass
    (run,) = runs(fake)
    env = run["env"]
    assert isinstance(env, dict)
    assert "TUNNEL_TOKEN" not in env


async def test_missing_binary_explains_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="not found") as caught:
        async with CLOUDFLARED.build(options(tmp_path / "nowhere" / "cloudflared"), LOCAL):
            pytest.fail("built")
    message = str(caught.value)
    assert "apt-get install cloudflared" in message
    assert "type: static" in message


@pytest.mark.parametrize("extra", [{}, {"local_url": "127.0.0.1:8000"}, {"local_url": "http://127.0.0.1"}])
async def test_quick_tunnel_needs_the_local_url(fake: Path, extra: dict[str, object]) -> None:
    with pytest.raises(ProviderError, match=r"extra\['local_url'\]"):
        async with CLOUDFLARED.build(options(fake), BuildContext(extra=extra)):
            pytest.fail("built")


def test_cloudflared_options() -> None:
    defaults = CloudflaredOptions()
    assert defaults.binary == "cloudflared" and defaults.token is None
    with pytest.raises(ValidationError, match="needs `hostname`"):
        CloudflaredOptions(token=SecretStr("t"))
    with pytest.raises(ValidationError, match="needs `token`"):
        CloudflaredOptions(hostname="voice.example.com")
    with pytest.raises(ValidationError, match="extra"):
        CloudflaredOptions.model_validate({"tokn": "t"})
    with pytest.raises(ValidationError):
        CloudflaredOptions(restart_backoff_secs=0)
    assert "eyJ" not in repr(CloudflaredOptions(token=SecretStr("eyJ"), hostname="h.example.com"))


async def test_static_tunnel() -> None:
    async with STATIC.build(
        StaticOptions(hostname="https://voice.example.com:8443"), BuildContext()
    ) as tunnel:
        assert tunnel.public_host == "voice.example.com:8443"
        tunnel.subscribe(lambda host: None)()
    with pytest.raises(ValidationError, match="has a path"):
        StaticOptions(hostname="https://voice.example.com/hooks")
    with pytest.raises(ValidationError, match="has scheme 'ftp'"):
        StaticOptions(hostname="ftp://voice.example.com")
    with pytest.raises(ValidationError, match="hostname"):
        StaticOptions.model_validate({})
