"""The typed shape of `patter.yaml`: frozen pydantic models for every section."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    InstanceOf,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from patterd.config.cluster import ClusterConfig
from patterd.config.fleet import DashboardConfig
from patterd.config.persist import DatabaseURL
from patterd.config.section import Section as Section  # re-exported: its old import path

# The server: and logging: sections moved to config/server.py; their old import path still works.
from patterd.config.server import LEVELS as LEVELS
from patterd.config.server import LoggingConfig as LoggingConfig
from patterd.config.server import ServerConfig as ServerConfig
from patterd.config.server import is_loopback as is_loopback
from patterd.hosts import host_allowed, url_host
from patterd.providers.spec import ProviderOptions, ProviderSpec
from patterd.redact import SECRET_MASK, redact_url

E164_PATTERN = r"^\+[1-9]\d{1,14}$"
PROVIDER_ROLES = ("engine", "stt", "llm", "tts", "vad")
CHAIN_ROLES = ("stt", "llm", "tts")  # roles that may list providers tried in order (fallback chains)


def _e164(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f'must be a quoted string like "+{value}"; YAML read {value} as a number')
    if isinstance(value, str) and not re.match(E164_PATTERN, value):
        raise ValueError(
            f"must be an E.164 number like +15550001234 (a + then up to 15 digits), got {value!r}"
        )
    return value


E164 = Annotated[str, StringConstraints(pattern=E164_PATTERN), BeforeValidator(_e164)]


def _scalar_to_str(value: object) -> object:
    """Let `{floor: 3}` mean the string "3": YAML types scalars, template variables are text."""
    if isinstance(value, Mapping):
        return {k: str(v) if isinstance(v, int | float | bool) else v for k, v in value.items()}
    return value


def _recording_mode(value: object) -> object:
    """`recording: true` (the old boolean) keeps meaning the carrier's recording."""
    return "carrier" if value is True else value


# Who records a call: patterd itself (`local`, recording.wav in the record), the carrier, both, or nobody.
RecordingMode = Annotated[
    Literal["local", "carrier", "both", False],
    BeforeValidator(_recording_mode),
    WithJsonSchema({"enum": ["local", "carrier", "both", True, False]}),
]


class TransferCallTool(Section):
    """Lets the agent transfer the caller to one of `numbers`."""

    type: Literal["transfer_call"]
    numbers: list[E164] = Field(min_length=1)


class EndCallTool(Section):
    """Lets the agent hang up."""

    type: Literal["end_call"]


class WebhookTool(Section):
    """A function the agent may call; arguments are POSTed as JSON to `url`."""

    type: Literal["webhook"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    url: str
    timeout_secs: float = Field(5, gt=0, le=300)
    headers: dict[str, str] = Field(default_factory=dict)
    max_response_bytes: int = Field(
        65536,
        ge=1,
        le=16 * 1024 * 1024,
        description="longer answers reach the model cut off, marked truncated",
    )
    follow_redirects: bool = Field(False, description="false: a 3xx answer is a tool error")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names (or *.domain) url and redirects may go to; empty: any",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http:// or https:// URL, got {redact_url(value)!r}")
        return value

    @model_validator(mode="after")
    def _url_on_allowed_hosts(self) -> WebhookTool:
        if self.allowed_hosts and not host_allowed(url_host(self.url), tuple(self.allowed_hosts)):
            raise ValueError(
                f"url {redact_url(self.url)!r} is not on allowed_hosts ({', '.join(self.allowed_hosts)})"
            )
        return self

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('must be a JSON Schema object: {"type": "object", "properties": {...}}')
        if not isinstance(value.get("properties", {}), dict):
            raise ValueError("properties must be a mapping of argument name to JSON Schema")
        return value


ToolConfig = Annotated[TransferCallTool | EndCallTool | WebhookTool, Field(discriminator="type")]
TOOL_TYPES: dict[str, type[Section]] = {
    "transfer_call": TransferCallTool,
    "end_call": EndCallTool,
    "webhook": WebhookTool,
}


class ProviderSection(BaseModel):
    """A provider picked by `type:`, with its options validated by that provider's own model."""

    model_config = ConfigDict(frozen=True)

    kind: str
    type: str
    options: ProviderOptions
    spec: InstanceOf[ProviderSpec] = Field(repr=False)
    line: int | None = None
    # `stt: [{type: a}, {type: b}]`: this section is the list's first member, the rest follow in order
    fallbacks: tuple[ProviderSection, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.kind}.{self.type}"

    @property
    def chain(self) -> tuple[ProviderSection, ...]:
        """Every member of the role in order: this section, then its fallbacks."""
        return (self, *self.fallbacks)

    def to_public_dict(self) -> dict[str, Any]:
        """`{type, **options}` as JSON, secrets masked, as in the YAML."""
        return {"type": self.type, **self.options.model_dump(mode="json")}

    def to_public_value(self) -> dict[str, Any] | list[dict[str, Any]]:
        """The role as written: one mapping, or the list of a fallback chain."""
        if not self.fallbacks:
            return self.to_public_dict()
        return [member.to_public_dict() for member in self.chain]


def pipeline_problem(present: set[str]) -> str | None:
    """What is wrong with an agent's choice of engine vs stt+llm+tts, if anything."""
    pipeline = {"stt", "llm", "tts"}
    if "engine" in present and present & pipeline:
        return "give either engine (speech-to-speech) or stt+llm+tts (a pipeline), not both"
    if "engine" in present:
        return None
    if not present & pipeline:
        return "needs either engine (speech-to-speech) or stt, llm and tts (a pipeline)"
    missing = sorted(pipeline - present)
    if missing:
        return f"a pipeline needs stt, llm and tts; missing: {', '.join(missing)}"
    return None


class AgentConfig(Section):
    """One agent: who answers, with which engine or pipeline, saying what."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    phone_number: E164 | None = None
    engine: ProviderSection | None = None
    stt: ProviderSection | None = None
    llm: ProviderSection | None = None
    tts: ProviderSection | None = None
    vad: ProviderSection | None = None
    system_prompt: str = ""
    first_message: str | None = None
    variables: Annotated[
        dict[str, str],
        BeforeValidator(_scalar_to_str),
        WithJsonSchema({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}),
    ] = Field(default_factory=dict)
    tools: list[ToolConfig] = Field(default_factory=list)
    recording: RecordingMode = False
    recording_notice: str | None = Field(
        None, description="spoken before the first message (e.g. This call may be recorded.)"
    )
    language: str = Field("en", min_length=2)
    max_duration_secs: float = Field(
        3600,
        ge=0,
        description="a connected call is ended (completed, reason max_duration) after this (0: no limit)",
    )

    @model_validator(mode="after")
    def _engine_or_pipeline(self, info: ValidationInfo) -> AgentConfig:
        context = info.context if isinstance(info.context, Mapping) else {}
        if context.get("pipeline_checked"):  # the loader already reported it against the raw keys
            return self
        problem = pipeline_problem({role for role in PROVIDER_ROLES if getattr(self, role) is not None})
        if problem:
            raise ValueError(problem)
        return self

    @property
    def is_pipeline(self) -> bool:
        return self.engine is None

    @property
    def records_locally(self) -> bool:
        """patterd writes the call's audio into its record (`local` or `both`)."""
        return self.recording in ("local", "both")

    @property
    def records_on_carrier(self) -> bool:
        """The carrier is asked to record (`carrier`, `both`, or the old `true`)."""
        return self.recording in ("carrier", "both")

    def sections(self) -> dict[str, ProviderSection]:
        """The provider sections this agent uses, by role."""
        out: dict[str, ProviderSection] = {}
        for role in PROVIDER_ROLES:
            section = getattr(self, role)
            if section is not None:
                out[role] = section
        return out

    def to_public_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude=set(PROVIDER_ROLES) | {"tools"})
        for role, section in self.sections().items():
            data[role] = section.to_public_value()
        data["tools"] = [_public_tool(tool) for tool in self.tools]
        return data


def _public_tool(tool: TransferCallTool | EndCallTool | WebhookTool) -> dict[str, Any]:
    data = tool.model_dump(mode="json")
    if isinstance(tool, WebhookTool):
        # headers usually carry credentials (Authorization); show which, never their values
        data["headers"] = dict.fromkeys(tool.headers, SECRET_MASK)
        data["url"] = redact_url(tool.url)  # user:pass@ and ?api_key=... likewise
    return data


class Config(BaseModel):
    """A whole validated `patter.yaml`, with everything resolved (defaults, env, persist path)."""

    model_config = ConfigDict(frozen=True)

    carrier: ProviderSection
    phone_number: str | None = None
    public_host: str | None = None  # webhook_url as host[:port], no scheme
    public_scheme: Literal["https", "http"] = "https"
    tunnel: ProviderSection | None = None
    persist: Path | DatabaseURL | None = None  # a records directory, or PostgreSQL
    pricing: dict[str, dict[str, float]] = Field(default_factory=dict)
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    agents: list[AgentConfig] = Field(min_length=1)
    source: Path | None = None
    digest: str = ""

    def agent(self, name: str) -> AgentConfig:
        """The agent called `name`; KeyError naming the known ones otherwise."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        known = ", ".join(a.name for a in self.agents)
        raise KeyError(f"no agent named {name!r}; known: {known}")

    def agent_for_number(self, number: str | None) -> AgentConfig:
        """The agent whose phone_number is `number`, else the first agent."""
        for agent in self.agents:
            if number is not None and agent.phone_number == number:
                return agent
        return self.agents[0]

    def to_public_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-ready data; secrets are masked."""
        return {
            "source": str(self.source) if self.source else None,
            "digest": self.digest,
            "carrier": self.carrier.to_public_dict(),
            "phone_number": self.phone_number,
            "public_host": self.public_host,
            "public_scheme": self.public_scheme,
            "tunnel": self.tunnel.to_public_dict() if self.tunnel else None,
            "persist": str(self.persist) if self.persist else None,
            "pricing": self.pricing,
            "server": self.server.model_dump(mode="json"),
            "logging": self.logging.model_dump(mode="json"),
            "agents": [agent.to_public_dict() for agent in self.agents],
            # shown once configured (a file without `cluster:` keeps its old shape)
            **({"cluster": self.cluster.to_public_dict()} if self.cluster != ClusterConfig() else {}),
            **({"dashboard": self.dashboard.to_public_dict()} if self.dashboard != DashboardConfig() else {}),
        }
