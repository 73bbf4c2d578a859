"""Builds the providers a config names, enters them on one exit stack, probes them, closes them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import structlog

from patterd.clock import SYSTEM_CLOCK, Clock
from patterd.errors import PatterdError, ProviderError
from patterd.plugins.registry import Registry
from patterd.providers.fallback import Breaker, FallbackLLM, FallbackSTT, FallbackTTS, Member
from patterd.providers.kinds import LLM, STT, TTS, VAD, Carrier, Engine, Tunnel
from patterd.providers.spec import BuildContext

if TYPE_CHECKING:
    from patterd.config import AgentConfig, Config, ProviderSection

log = structlog.get_logger("patterd.graph")
CHAINS: dict[str, type[FallbackSTT | FallbackTTS | FallbackLLM]] = {
    "stt": FallbackSTT,
    "tts": FallbackTTS,
    "llm": FallbackLLM,
}


@dataclass
class AgentParts:
    """One agent's built providers: a speech-to-speech engine, or the parts of a pipeline."""

    config: AgentConfig
    engine: Engine | None = None
    stt: STT | None = None
    llm: LLM | None = None
    tts: TTS | None = None
    vad: VAD | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def provider_mode(self) -> str:
        """`realtime` for an engine, `pipeline` for stt → llm → tts."""
        return "realtime" if self.engine is not None else "pipeline"

    @property
    def provider_name(self) -> str:
        """The engine type, or `pipeline`."""
        return self.config.engine.type if self.config.engine is not None else "pipeline"


@dataclass
class BuiltProvider:
    """A live provider and where it came from, for checks and for `patterd check --probe`."""

    path: str  # config path, e.g. "agents[0].engine"
    key: str  # "engine.openai_realtime"
    instance: Any
    section: ProviderSection | None


@dataclass
class Graph:
    """The providers of one config, alive; new calls use the newest graph, old ones drain with theirs."""

    config: Config
    carriers: dict[str, Carrier]
    agents: dict[str, AgentParts]
    providers: list[BuiltProvider]
    tunnel: Tunnel | None
    stack: AsyncExitStack
    generation: int = 0
    users: int = 0  # live calls holding this graph
    retired: bool = False
    cache: dict[str, Any] = field(default_factory=dict)  # per-graph state of upper layers (composed agents)
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def carrier(self) -> Carrier:
        """The configured carrier (the local softphone when none is configured)."""
        return self.carriers[self.config.carrier.type]

    def agent_for(self, number: str | None) -> AgentParts:
        """The agent whose phone_number is `number`, else the first agent."""
        for agent in self.agents.values():
            if number and agent.config.phone_number == number:
                return agent
        return next(iter(self.agents.values()))

    async def check(self) -> list[tuple[str, str | None]]:
        """Probe every provider that can be probed: (path, None when fine or the error text)."""
        results: list[tuple[str, str | None]] = []
        for built in self.providers:
            if built.section is None or built.section.spec.check is None:
                continue
            try:
                await built.section.spec.check(built.instance)
                results.append((built.path, None))
            except (PatterdError, OSError) as exc:
                results.append((built.path, f"{type(exc).__name__}: {exc}"))
        return results

    def acquire(self) -> None:
        """A call starts using this graph."""
        self.users += 1

    async def release(self) -> None:
        """A call stopped using this graph; a retired graph closes with its last call."""
        self.users -= 1
        if self.retired and self.users <= 0:
            await self.aclose()

    async def retire(self) -> None:
        """A newer graph took over: close now if idle, else when the last call leaves."""
        self.retired = True
        if self.users <= 0:
            await self.aclose()

    async def aclose(self) -> None:
        """Close every provider in reverse order of building (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        await self.stack.aclose()
        log.info("graph closed", generation=self.generation)


async def _enter(stack: AsyncExitStack, section: ProviderSection, ctx: BuildContext, path: str) -> Any:
    try:
        return await stack.enter_async_context(section.spec.build(section.options, ctx))
    except ProviderError:
        raise
    except PatterdError:
        raise
    except Exception as exc:  # a provider's build may fail in any way; name the path
        raise ProviderError(f"{path} ({section.spec.key}): {type(exc).__name__}: {exc}") from exc


def build_context(config: Config, *, local_url: str, clock: Clock = SYSTEM_CLOCK) -> BuildContext:
    """The BuildContext for providers of `config` (the tunnel itself is built with it too)."""
    return BuildContext(
        public_host=config.public_host,
        public_scheme=config.public_scheme,
        clock=clock,
        phone_number=config.phone_number,
        config_dir=config.source.parent if config.source else None,
        media_idle_timeout_secs=config.server.media_idle_timeout_secs,
        extra={"local_url": local_url},
    )


async def build_graph(
    config: Config,
    registry: Registry,
    *,
    local_url: str,
    clock: Clock = SYSTEM_CLOCK,
    generation: int = 0,
    tunnel: Tunnel | None = None,
) -> Graph:
    """Build and enter every provider `config` names; a failure unwinds what was built and raises."""
    stack = AsyncExitStack()
    await stack.__aenter__()
    providers: list[BuiltProvider] = []
    try:
        ctx = build_context(config, local_url=local_url, clock=clock)
        if tunnel is not None:  # the daemon owns the tunnel; it outlives graphs across reloads
            ctx = dataclasses.replace(ctx, public_host=tunnel.public_host, public_scheme="https")
        carriers: dict[str, Carrier] = {}
        carrier = cast(Carrier, await _enter(stack, config.carrier, ctx, "carrier"))
        carriers[config.carrier.type] = carrier
        providers.append(BuiltProvider("carrier", config.carrier.spec.key, carrier, config.carrier))
        default = registry.default_carrier()
        if default is not None and default not in carriers:  # the browser phone is there beside any carrier
            default_spec = registry.get("carrier", default)
            built = await stack.enter_async_context(default_spec.build(default_spec.options(), ctx))
            carriers[default] = cast(Carrier, built)
        if tunnel is not None and config.phone_number:
            configure = getattr(carrier, "configure_number", None)
            facts = config.carrier.spec.carrier
            if callable(configure) and facts is not None:  # the voice webhook where its spec mounts it
                voice = facts.webhook_route(config.carrier.type).replace("{hook}", "voice")
                await configure(config.phone_number, ctx.public_url(voice))
        agents: dict[str, AgentParts] = {}
        for index, agent in enumerate(config.agents):
            path = f"agents[{index}]"
            agents[agent.name] = await _build_agent(stack, agent, ctx, path, providers)
        return Graph(
            config=config,
            carriers=carriers,
            agents=agents,
            providers=providers,
            tunnel=tunnel,
            stack=stack,
            generation=generation,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await stack.aclose()
        raise


async def _build_agent(
    stack: AsyncExitStack, agent: AgentConfig, ctx: BuildContext, path: str, providers: list[BuiltProvider]
) -> AgentParts:
    parts = AgentParts(agent)
    for role in ("engine", "stt", "llm", "tts", "vad"):
        section: ProviderSection | None = getattr(agent, role)
        if section is None:
            continue
        if section.fallbacks and role in CHAINS:
            # a fallback chain: every member built (and probed by check) at its own path
            members: list[Member[Any]] = []
            for index, member in enumerate(section.chain):
                member_path = f"{path}.{role}[{index}]"
                instance = await _enter(stack, member, ctx, member_path)
                providers.append(BuiltProvider(member_path, member.spec.key, instance, member))
                types = [m.type for m in section.chain]
                name = member.type if types.count(member.type) == 1 else f"{member.type}[{index}]"
                members.append(Member(name, member_path, instance, Breaker(ctx.clock)))
            setattr(parts, role, CHAINS[role](members))
            continue
        instance = await _enter(stack, section, ctx, f"{path}.{role}")
        providers.append(BuiltProvider(f"{path}.{role}", section.spec.key, instance, section))
        setattr(parts, role, instance)
    return parts
