"""The `patterd` command line: parses arguments and hands off; exit codes per contracts §1."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from patterd import __version__
from patterd.errors import ConfigError, PatterdError

if TYPE_CHECKING:  # the CLI imports the heavy parts only for the command that needs them
    from patterd.config import Config, ProviderSection
    from patterd.daemon import ConfigSource
    from patterd.plugins import Registry

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78


def default_config_text() -> str:
    """The built-in offline default config (the same file as config/patter.yaml)."""
    return resources.files("patterd.config").joinpath("default.yaml").read_text(encoding="utf-8")


def find_config(explicit: str | None) -> Path | None:
    """`--config`, else $PATTERD_CONFIG, ./patter.yaml, the user config dir, /etc; None: use the default."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("PATTERD_CONFIG")
    if env:
        return Path(env).expanduser()
    candidates = [
        Path("patter.yaml"),
        Path(platformdirs.user_config_dir("patterd")) / "patter.yaml",
        Path("/etc/patterd/patter.yaml"),
    ]
    return next((p for p in candidates if p.is_file()), None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patterd", description="A voice-gateway daemon that gives AI agents phone numbers."
    )
    parser.add_argument("--version", action="version", version=f"patterd {__version__}")
    sub = parser.add_subparsers(dest="command")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            metavar="PATH",
            help="patter.yaml (default: $PATTERD_CONFIG, ./patter.yaml, ...)",
        )

    def run_args(p: argparse.ArgumentParser) -> None:
        config_arg(p)
        p.add_argument("--bind", metavar="ADDR", help="HOST:PORT or fd://N (an inherited listening socket)")
        p.add_argument("--no-watch", action="store_true", help="do not reload when the config file changes")

    run_args(parser)
    run_args(sub.add_parser("run", help="run the daemon in the foreground (the default)"))
    check = sub.add_parser("check", help="validate the config; print every problem")
    config_arg(check)
    check.add_argument(
        "--probe", action="store_true", help="also check credentials and reachability of providers"
    )
    providers = sub.add_parser("providers", help="list installed providers")
    providers.add_argument("--json", action="store_true")
    sub.add_parser("schema", help="print the JSON Schema of the config file")
    sim = sub.add_parser("simulate", help="run one call against an agent with a synthetic caller")
    config_arg(sim)
    sim.add_argument("--agent", metavar="NAME")
    group = sim.add_mutually_exclusive_group(required=True)
    group.add_argument("--say", metavar="TEXT", action="append", help="a caller line, spoken (repeatable)")
    group.add_argument(
        "--text", metavar="TEXT", action="append", help="a caller line, sent as text (repeatable)"
    )
    group.add_argument("--wav", metavar="FILE", help="a WAV file the caller plays")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `patterd` command."""
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        if command == "version":
            print(f"patterd {__version__}")
            return EXIT_OK
        if command == "providers":
            return _providers(args.json)
        if command == "schema":
            return _schema()
        if command == "check":
            return _check(args.config, args.probe)
        if command == "simulate":
            return _simulate(args)
        return _run(args.config, args.bind, watch=not args.no_watch)
    except KeyboardInterrupt:
        return EXIT_FAILURE


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run the daemon on uvloop when it is installed (cheaper socket I/O per media frame), else asyncio.

    PATTERD_EVENT_LOOP=asyncio forces the standard loop.
    """
    if os.environ.get("PATTERD_EVENT_LOOP", "auto") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def _load(explicit: str | None) -> tuple[ConfigSource, Config, Registry]:
    """The config to run: from a file, or the built-in default; ConfigError when it is invalid."""
    from patterd.config import load_config, load_config_text
    from patterd.daemon import ConfigSource
    from patterd.plugins import load_registry

    registry = load_registry()
    path = find_config(explicit)
    if path is None:
        text = default_config_text()
        return (
            ConfigSource(None, text),
            load_config_text(text, registry, source="<built-in default>"),
            registry,
        )
    if not path.is_file():
        # a path from the environment names its variable: the command line did not mention it
        from_env = explicit is None and os.environ.get("PATTERD_CONFIG")
        where = f"$PATTERD_CONFIG={from_env!r}" if from_env else str(path)
        raise ConfigError([], source=f"{where}: no such file")
    return ConfigSource(path), load_config(path, registry), registry


def _print_config_error(exc: ConfigError) -> None:
    print(
        f"{exc.source or 'config'}: {len(exc.issues)} problem(s)" if exc.issues else str(exc.source),
        file=sys.stderr,
    )
    for issue in exc.issues:
        print(str(issue), file=sys.stderr)


def _run(explicit: str | None, bind: str | None, *, watch: bool) -> int:
    from patterd.daemon import Daemon
    from patterd.logs import configure_logging
    from patterd.workers.identity import WorkerIdentity

    try:
        source, config, registry = _load(explicit)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    configure_logging(config.logging.level, redact_phone=config.logging.redact_phone)
    worker = WorkerIdentity.from_environ()
    if worker is None and config.server.worker_count > 1:
        return _supervise(source, config, bind, watch=watch)

    async def serve() -> int:
        daemon = Daemon(
            source, config, registry=registry, bind=bind, watch=watch, worker=worker, freeze_heap=True
        )
        return await daemon.run()

    try:
        return run_event_loop(serve())
    except PatterdError as exc:
        print(f"patterd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # cannot bind, cannot write, ...
        print(f"patterd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _supervise(source: ConfigSource, config: Config, bind: str | None, *, watch: bool) -> int:
    """`server.workers` > 1: this process supervises that many `patterd run` workers on one port."""
    from patterd.workers.supervisor import run_supervisor

    args = ["--config", str(source.path.resolve())] if source.path is not None else []
    # A configured cluster secret reaches the workers through the config; else the supervisor makes one.
    configured = getattr(getattr(config, "cluster", None), "secret", None) is not None
    try:
        return run_supervisor(
            [*args, *([] if watch else ["--no-watch"])],
            count=config.server.worker_count,
            bind=bind,
            host=config.server.host,
            port=config.server.port,
            note="" if source.path else " (built-in offline default config: no patter.yaml found)",
            secret_configured=configured,
        )
    except OSError as exc:  # cannot bind
        print(f"patterd: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _check(explicit: str | None, probe: bool) -> int:
    try:
        source, config, registry = _load(explicit)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    where = source.path or "<built-in default>"
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    print(f"{where}: ok ({len(config.agents)} agent(s), carrier {config.carrier.type})")
    if not probe:
        return EXIT_OK
    return asyncio.run(_probe(config, registry))


def config_warnings(config: Config) -> list[str]:
    """Things that are allowed but unwise (unauthenticated webhooks, ...)."""
    out: list[str] = []
    sections: list[tuple[str, ProviderSection]] = [("carrier", config.carrier)]
    for index, agent in enumerate(config.agents):
        for role in ("engine", "stt", "llm", "tts", "vad"):
            section = getattr(agent, role)
            if section is not None:
                sections.append((f"agents[{index}].{role}", section))
    for path, section in sections:
        warn = getattr(section.options, "config_warnings", None)
        if callable(warn):
            out.extend(f"{path}: {w}" for w in warn())
    return out


async def _probe(config: Config, registry: Registry) -> int:
    from patterd.graph import build_graph

    try:
        graph = await build_graph(config, registry, local_url="http://127.0.0.1:0")
    except PatterdError as exc:
        print(f"probe failed: {exc}")
        return EXIT_FAILURE
    try:
        results = await graph.check()
    finally:
        await graph.aclose()
    failed = 0
    for path, error in results:
        print(f"{path}: {'ok' if error is None else error}")
        failed += error is not None
    return EXIT_FAILURE if failed else EXIT_OK


def _providers(as_json: bool) -> int:
    from patterd.plugins import load_registry

    registry = load_registry()
    rows = [
        {"provider": s.spec.key, "distribution": s.distribution, "summary": s.spec.summary} for s in registry
    ]
    broken = [{"provider": k, "error": v} for k, v in sorted(registry.broken.items())]
    if as_json:
        print(json.dumps({"providers": rows, "broken": broken}, indent=2))
        return EXIT_OK
    width = max((len(r["provider"]) for r in rows), default=10)
    dist_width = max((len(r["distribution"]) for r in rows), default=7)
    for row in rows:
        print(f"{row['provider']:<{width}}  {row['distribution']:<{dist_width}}  {row['summary']}")
    for item in broken:
        print(f"{item['provider']:<{width}}  BROKEN  {item['error']}", file=sys.stderr)
    return EXIT_OK


def _schema() -> int:
    from patterd.config import json_schema
    from patterd.plugins import load_registry

    print(json.dumps(json_schema(load_registry()), indent=2))
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from patterd.logs import configure_logging
    from patterd.simulate import simulate

    try:
        _source, config, registry = _load(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    configure_logging("warning", redact_phone=config.logging.redact_phone)
    return simulate(config, registry, agent=args.agent, say=args.say, text=args.text, wav=args.wav)
