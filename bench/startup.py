"""Measures patterd's start-to-ready time and idle memory over several cold starts.

Each run copies the config with `server.port` set to a free loopback port (the copy sits
beside the original, hidden and deleted afterwards, so a `.env` and relative paths still
resolve), starts the daemon, polls `GET /readyz` until it answers 200, lets it idle for a
second, reads VmRSS and VmHWM from /proc/PID/status, then stops it with SIGTERM and checks
that it exits 0. It also reads the daemon's CPU time (user + system, /proc/PID/stat) the moment
`/readyz` answers: on a shared machine that varies far less than the wall time. Call records go to a throwaway $PATTER_LOG_DIR; `--records N` first writes N call
records there (bench/store_bench.py's generator, retention off) so start-up meets a history, and
`--no-index` deletes the index before every run (the hydrate then parses every record). With a
history, each run also reports how long the history took to load after ready (the `call records
loaded` log line) — since issue 14 the daemon serves first and loads the history behind. `--warm-up`
also reports when the warm-up after ready finished (the `warmed up` log line: numpy and the offline
models load behind readiness; a checkout from before it never logs it, so leave it off for `--vs`).

Bytecode: this repository's environment sets PYTHONDONTWRITEBYTECODE, so every start compiles each
module whose `__pycache__` entry is stale (~0.2-0.5 s here), which an installed package never does.
`--bytecode-cache DIR` runs the daemons with PYTHONPYCACHEPREFIX=DIR (writing allowed) after one
discarded start that fills it: start-up as an installed package sees it.

Usage::

    python bench/startup.py                              # patterd --config config/patter.yaml, 5 runs
    python bench/startup.py -n 10 --config config/examples/pipeline.yaml
    python bench/startup.py --command "python -m patterd run --config {config}"
    python bench/startup.py --json                       # one JSON object for scripts
    python bench/startup.py --records 100000 --no-index  # with a call history (generated once), index deleted
    python bench/startup.py --vs "python other_patterd.py --config {config}"  # A B A B …, ratio per pair
    python bench/startup.py --warm-up --bytecode-cache /tmp/pyc          # + warm-up end, compiled bytecode

`{config}` and `{port}` in --command are replaced by the temporary config path and the port
(e.g. `--command "patterd --config {config} --bind 127.0.0.1:{port}"`). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store_bench import generate  # noqa: E402
from patterd.store.index import INDEX_NAME  # noqa: E402

DEFAULT_COMMAND = "patterd --config {config}"
READY_TIMEOUT_SECS = 30.0
STOP_TIMEOUT_SECS = 45.0


@dataclass
class Run:
    """One cold start."""

    ready_secs: float
    rss_kib: int
    hwm_kib: int
    exit_code: int | None
    history_secs: float | None = None  # start → history loaded (the hydrate's log line), when it was seen
    warm_secs: float | None = None  # start → the warm-up after ready finished (`--warm-up`), when it was seen
    cpu_secs: float | None = None  # the daemon's CPU time (user + system) when /readyz first answered 200


def free_port() -> int:
    """A loopback port nobody listens on right now (the daemon binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_copy(config: Path, port: int) -> Path:
    """The config with server.host/port pointed at 127.0.0.1:port, written beside the original."""
    data: Any = yaml.safe_load(config.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"{config}: expected a mapping at the top level, got {type(data).__name__}")
    server = data.setdefault("server", {}) or {}
    server.update({"host": "127.0.0.1", "port": port})
    data["server"] = server
    fd, name = tempfile.mkstemp(prefix=f".{config.stem}.bench-", suffix=".yaml", dir=config.parent)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(data, out, sort_keys=False)
    return Path(name)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (/proc/PID/stat), None if it is gone.

    Less sensitive to other processes than the wall time to ready: on a shared machine the daemon
    waits for a core, which stretches the wall time but not the CPU it needs (caches suffer a little).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until `url` answers 200; raises if the process exits or time runs out."""
    start = time.perf_counter()
    deadline = start + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.perf_counter()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.005)  # a poll interval, not a wait for an event: this is a measurement
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


def logged(log: Any, process: subprocess.Popen[bytes], event: bytes, timeout: float) -> float | None:
    """perf_counter time the daemon logged `event` (polled from its log file), None if never."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and process.poll() is None:
        log.seek(0)
        if event in log.read():
            return time.perf_counter()
        time.sleep(0.01)  # a poll interval for a measurement, like wait_ready's
    return None


def one_run(
    command: str,
    config: Path,
    idle_secs: float,
    records: Path,
    history: bool = False,
    *,
    warm: bool = False,
    env: dict[str, str] | None = None,
) -> Run:
    port = free_port()
    copy = config_copy(config, port)
    try:
        with tempfile.TemporaryFile() as log:
            argv = [part.format(config=copy, port=port) for part in shlex.split(command)]
            env = {**(env or os.environ), "PATTER_LOG_DIR": str(records), "PYTHONUNBUFFERED": "1"}
            if history:
                env["PATTER_LOG_RETENTION_DAYS"] = "0"  # the generated records are months old: keep them
            started = time.perf_counter()
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
            try:
                ready = wait_ready(f"http://127.0.0.1:{port}/readyz", process, READY_TIMEOUT_SECS)
                cpu = cpu_seconds(process.pid)  # first thing: the warm-up after ready adds to it
                warmed = logged(log, process, b'"warmed up"', 60.0) if warm else None
                loaded = logged(log, process, b"call records loaded", 120.0) if history else None
                time.sleep(idle_secs)
                memory = proc_status(process.pid)
            except Exception:
                log.seek(0)
                tail = log.read().decode(errors="replace").splitlines()[-20:]
                print("\n".join(tail), file=sys.stderr)
                raise
            finally:
                exit_code = stop(process)
            return Run(
                ready - started,
                memory.get("VmRSS", 0),
                memory.get("VmHWM", 0),
                exit_code,
                loaded - started if loaded is not None else None,
                warmed - started if warmed is not None else None,
                cpu,
            )
    finally:
        copy.unlink(missing_ok=True)


def stop(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, then SIGKILL if it has not stopped in time; the exit code (None if it had to be killed)."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(STOP_TIMEOUT_SECS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--runs", type=int, default=5, help="cold starts (default 5)")
    parser.add_argument(
        "--config", type=Path, default=Path("config/patter.yaml"), help="config file to start with"
    )
    parser.add_argument(
        "--command", default=DEFAULT_COMMAND, help=f"daemon command (default {DEFAULT_COMMAND!r})"
    )
    parser.add_argument("--idle-secs", type=float, default=1.0, help="idle time before reading memory")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--records", type=int, default=0, help="call records on disk before the first start")
    parser.add_argument("--no-index", action="store_true", help="delete the index before every start")
    parser.add_argument(
        "--vs", metavar="COMMAND", help="a second daemon command run in turn with --command (A B A B …)"
    )
    parser.add_argument(
        "--keep", type=Path, help="records root to use and keep (--records are generated only if it is empty)"
    )
    parser.add_argument(
        "--warm-up", action="store_true", help="also report when the warm-up after ready finished (A only)"
    )
    parser.add_argument(
        "--bytecode-cache",
        type=Path,
        metavar="DIR",
        help="PYTHONPYCACHEPREFIX for the daemons (filled first)",
    )
    args = parser.parse_args(argv)
    if not args.config.is_file():
        parser.error(f"--config {args.config} is not a file")
    env = dict(os.environ)
    if args.bytecode_cache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(args.bytecode_cache.resolve())

    runs: list[Run] = []
    others: list[Run] = []  # --vs: the second command's runs, each started right after the first's
    with tempfile.TemporaryDirectory(prefix="patterd-bench-") as scratch:
        records = str(args.keep or scratch)
        if args.records and not (Path(records) / "calls").exists():
            generate(Path(records), args.records)
        if args.bytecode_cache is not None:  # one discarded start of each command compiles into the cache
            for command in filter(None, (args.command, args.vs)):
                one_run(command, args.config.resolve(), 0.0, Path(records), env=env)
        for index in range(args.runs):
            if args.no_index:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{Path(records) / INDEX_NAME}{suffix}").unlink(missing_ok=True)
            run = one_run(
                args.command,
                args.config.resolve(),
                args.idle_secs,
                Path(records),
                history=args.records > 0 or args.keep is not None,
                warm=args.warm_up,
                env=env,
            )
            runs.append(run)
            if args.vs:
                if args.no_index:
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{Path(records) / INDEX_NAME}{suffix}").unlink(missing_ok=True)
                other = one_run(
                    args.vs,
                    args.config.resolve(),
                    args.idle_secs,
                    Path(records),
                    history=run.history_secs is not None,
                    env=env,
                )
                others.append(other)
                if not args.json:
                    print(
                        f"run {index + 1} --vs: ready {other.ready_secs * 1000:7.1f} ms   "
                        f"cpu {(other.cpu_secs or 0) * 1000:5.0f} ms   exit {other.exit_code}"
                    )
            if not args.json:
                loaded = f"   history loaded {run.history_secs * 1000:8.1f} ms" if run.history_secs else ""
                loaded += f"   warmed up {run.warm_secs * 1000:7.1f} ms" if run.warm_secs else ""
                print(
                    f"run {index + 1}: ready {run.ready_secs * 1000:7.1f} ms   cpu {(run.cpu_secs or 0) * 1000:5.0f} ms   "
                    f"idle RSS {run.rss_kib / 1024:6.1f} MiB   peak {run.hwm_kib / 1024:6.1f} MiB   "
                    f"exit {run.exit_code}{loaded}"
                )
    ready = summary([r.ready_secs * 1000 for r in runs])
    rss = summary([r.rss_kib / 1024 for r in runs])
    clean = all(r.exit_code == 0 for r in runs + others)
    # Ratio pair by pair: the machine's speed drifts, a run and its neighbour see about the same load.
    paired = (
        summary([a.ready_secs / b.ready_secs for a, b in zip(runs, others, strict=True)]) if others else None
    )
    if args.json:
        print(
            json.dumps(
                {
                    "runs": [asdict(r) for r in runs],
                    "ready_ms": ready,
                    "idle_rss_mib": rss,
                    "clean_exit": clean,
                    "vs_runs": [asdict(r) for r in others],
                    "ready_ratio_vs": paired,
                }
            )
        )
    else:
        print(
            f"start → /readyz 200: min {ready['min']:.1f} ms, median {ready['median']:.1f} ms, max {ready['max']:.1f} ms"
        )
        print(
            f"idle RSS:            min {rss['min']:.1f} MiB, median {rss['median']:.1f} MiB, max {rss['max']:.1f} MiB"
        )
        print(f"SIGTERM exit codes:  {[r.exit_code for r in runs]}")
        cpu = summary([(r.cpu_secs or 0) * 1000 for r in runs])
        print(
            f"CPU at ready:        min {cpu['min']:.0f} ms, median {cpu['median']:.0f} ms, max {cpu['max']:.0f} ms"
        )
        warm = [r.warm_secs * 1000 for r in runs if r.warm_secs is not None]
        if warm:
            w = summary(warm)
            print(
                f"start → warmed up:   min {w['min']:.1f} ms, median {w['median']:.1f} ms, max {w['max']:.1f} ms"
            )
        if paired is not None:
            vs = summary([r.ready_secs * 1000 for r in others])
            print(
                f"--vs ready:          min {vs['min']:.1f} ms, median {vs['median']:.1f} ms, max {vs['max']:.1f} ms"
            )
            vs_cpu = summary([(r.cpu_secs or 0) * 1000 for r in others])
            print(
                f"--vs CPU at ready:   min {vs_cpu['min']:.0f} ms, median {vs_cpu['median']:.0f} ms, max {vs_cpu['max']:.0f} ms"
            )
            print(
                f"ready ratio A/--vs:  min {paired['min']:.2f}, median {paired['median']:.2f}, max {paired['max']:.2f}"
            )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
