"""An agent ready to take calls: its engine (realtime provider or composed pipeline) and its tools."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from patterd.calls.pipeline import PipelineEngine, PipelineOptions
from patterd.calls.tools import ToolSet, WebhookTool
from patterd.providers.kinds import Engine

if TYPE_CHECKING:
    from patterd.config import AgentConfig
    from patterd.graph import AgentParts, Graph


@dataclass
class AgentRuntime:
    """One agent of one graph, composed once and shared by its calls."""

    parts: AgentParts
    engine: Engine
    toolset: ToolSet = field(default_factory=ToolSet)

    @property
    def name(self) -> str:
        return self.parts.name

    @property
    def config(self) -> AgentConfig:
        return self.parts.config

    @property
    def provider_mode(self) -> str:
        return self.parts.provider_mode

    @property
    def provider_name(self) -> str:
        return self.parts.provider_name


def toolset_for(agent: AgentConfig) -> ToolSet:
    """The ToolSet an agent's `tools:` list describes."""
    end_call = False
    numbers: list[str] = []
    hooks: list[WebhookTool] = []
    for tool in agent.tools:
        if tool.type == "end_call":
            end_call = True
        elif tool.type == "transfer_call":
            numbers.extend(tool.numbers)
        elif tool.type == "webhook":
            hooks.append(
                WebhookTool(
                    name=tool.name,
                    description=tool.description,
                    parameters=tool.parameters,
                    url=tool.url,
                    timeout_secs=tool.timeout_secs,
                    headers=tool.headers,
                    max_response_bytes=tool.max_response_bytes,
                    follow_redirects=tool.follow_redirects,
                    allowed_hosts=tuple(tool.allowed_hosts),
                )
            )
    return ToolSet(end_call=end_call, transfer_numbers=tuple(numbers), webhooks=tuple(hooks))


def compose(parts: AgentParts) -> AgentRuntime:
    """The engine of an agent: its realtime provider, or a pipeline of its stt, llm, tts and vad."""
    toolset = toolset_for(parts.config)
    if parts.engine is not None:
        return AgentRuntime(parts, parts.engine, toolset)
    cfg = parts.config
    assert parts.stt is not None and parts.llm is not None and parts.tts is not None, "validated by config"
    pipeline = PipelineEngine(
        parts.stt,
        parts.llm,
        parts.tts,
        parts.vad,
        options=PipelineOptions(
            stt_name=cfg.stt.type if cfg.stt else "",
            tts_name=cfg.tts.type if cfg.tts else "",
        ),
    )
    return AgentRuntime(parts, cast(Engine, pipeline), toolset)


def agent_runtime(graph: Graph, name: str) -> AgentRuntime:
    """The composed agent `name` of `graph` (composed on first use, then kept with the graph)."""
    key = f"agent:{name}"
    runtime = graph.cache.get(key)
    if runtime is None:
        runtime = graph.cache[key] = compose(graph.agents[name])
    return cast(AgentRuntime, runtime)
