"""Loads `patter.yaml` into a Config, collecting every problem into one ConfigError."""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import TypeAdapter, ValidationError

from patterd.config.cluster import ClusterConfig
from patterd.config.fleet import DashboardConfig
from patterd.config.interpolate import interpolate_document, interpolate_lenient, load_dotenv, merge_environ
from patterd.config.load_base import YamlPath, _type_name, unknown_key_message
from patterd.config.load_top import TopLevel
from patterd.config.model import (
    CHAIN_ROLES,
    E164,
    PROVIDER_ROLES,
    TOOL_TYPES,
    AgentConfig,
    Config,
    LoggingConfig,
    ProviderSection,
    Section,
    ServerConfig,
    pipeline_problem,
)
from patterd.config.yaml_lines import parse_yaml
from patterd.cost import pricing_problems
from patterd.errors import ConfigError, ConfigIssue
from patterd.plugins.registry import Registry
from patterd.providers.spec import validation_environ

FILE_KEYS = (
    "carrier",
    "phone_number",
    "webhook_url",
    "tunnel",
    "persist",
    "pricing",
    "server",
    "logging",
    "cluster",
    "dashboard",
    "agents",
)
EXTENSION_PREFIX = "x-"

_E164 = TypeAdapter(E164)
_PRICING = TypeAdapter(dict[str, dict[str, float]])


def load_config(path: Path, registry: Registry, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate the file at `path` (plus a `.env` beside it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue("", f"cannot read config file: {exc}")], source=str(path)) from exc
    dotenv, dotenv_issues = load_dotenv(path.parent / ".env")
    merged = merge_environ(os.environ if environ is None else environ, dotenv)
    try:
        config = load_config_text(text, registry, source=str(path), base_dir=path.parent, environ=merged)
    except ConfigError as exc:
        raise ConfigError(dotenv_issues + exc.issues, source=str(path)) from None
    if dotenv_issues:
        raise ConfigError(dotenv_issues, source=str(path))
    return config.model_copy(update={"source": path.absolute()})


def load_config_text(
    text: str,
    registry: Registry,
    *,
    source: str = "<string>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate config `text`; raises one ConfigError listing every issue found."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    doc = parse_yaml(text)
    if doc.syntax_error:
        raise ConfigError(doc.issues, source=source)
    issues = list(doc.issues)
    unset = interpolate_document(doc, env)
    issues += unset
    digest = hashlib.sha256(interpolate_lenient(text, env).encode("utf-8")).hexdigest()
    with validation_environ(env):
        loader = _Loader(doc, registry, env, base_dir)
        config = loader.run(digest)
    reported = {issue.path for issue in unset}  # an unset variable explains any error at its path
    issues += [issue for issue in loader.issues if issue.path not in reported]
    if issues or config is None:
        raise ConfigError(_ordered(issues), source=source)
    return config


def _ordered(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """Issues in file order (those without a line last), each once."""
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.line is None, i.line or 0))


# The LLM of a pipeline agent that names none (Patter's pipeline-mode default; docs/configuration.md).
DEFAULT_LLM: Mapping[str, str] = {"type": "openai", "model": "gpt-4o-mini"}


class _Loader(TopLevel):
    """One pass over a parsed document; appends to `issues` instead of stopping."""

    # ------------------------------------------------------------------ top level

    def run(self, digest: str) -> Config | None:
        root = self.doc.value if self.doc.value is not None else {}
        if not isinstance(root, dict):
            self.issue(
                (), f"the config must be a mapping of keys ({', '.join(FILE_KEYS)}), got {_type_name(root)}"
            )
            return None
        for key in root:
            # `x-…` keys hold YAML anchors to reuse (as in docker compose) and are otherwise ignored
            if key not in FILE_KEYS and not key.startswith(EXTENSION_PREFIX):
                self.issue((key,), unknown_key_message(key, FILE_KEYS))

        raw_carrier = root.get("carrier")
        if raw_carrier is None:
            carrier = self.default_carrier()
        else:
            carrier = self.provider("carrier", raw_carrier, ("carrier",))
        phone_number = self.validate(_E164, root.get("phone_number"), ("phone_number",))
        carrier_type = raw_carrier.get("type") if isinstance(raw_carrier, dict) else None
        facts = self.carrier_facts(carrier_type)
        if facts is not None and facts.needs_number and root.get("phone_number") is None:
            self.issue(
                ("phone_number",),
                f'required when carrier is {carrier_type} (the E.164 number calls arrive on, e.g. "+15550001234")',
                self.doc.line(("carrier", "type")),
            )
        public_host, public_scheme = self.webhook_url(root.get("webhook_url"))
        tunnel = self.tunnel(root.get("tunnel"))
        self.check_reachable(carrier_type, facts, root.get("webhook_url"), root.get("tunnel"))
        persist = self.persist(root.get("persist"))
        pricing = self.validate(_PRICING, root.get("pricing"), ("pricing",)) or {}
        for provider, prices in pricing.items():
            for key in prices:
                for problem in pricing_problems({provider: {key: prices[key]}}):
                    path = ("pricing", provider, key)
                    self.issue(path, problem.split(": ", 1)[1], self.doc.line(path))
        server = self.section(ServerConfig, root.get("server"), ("server",))
        self.check_dashboard_token(server, root.get("server"))
        logging = self.section(LoggingConfig, root.get("logging"), ("logging",))
        cluster = self.section(ClusterConfig, root.get("cluster"), ("cluster",))
        dashboard = self.section(DashboardConfig, root.get("dashboard"), ("dashboard",))
        agents = self.agents(root.get("agents"))

        if self.issues or None in (carrier, server, logging, cluster, dashboard, agents):
            return None
        try:
            return Config(
                carrier=carrier,
                phone_number=phone_number,
                public_host=public_host,
                public_scheme=public_scheme,
                tunnel=tunnel,
                persist=persist,
                pricing=pricing,
                server=server,
                logging=logging,
                cluster=cluster,
                dashboard=dashboard,
                agents=agents,
                digest=digest,
            )
        except ValidationError as exc:  # every part was validated above; this is a safety net
            self.pydantic_issues(exc, (), Config)
            return None

    # ------------------------------------------------------------------ agents

    def agents(self, raw: Any) -> list[AgentConfig] | None:
        path: YamlPath = ("agents",)
        if raw is None:
            self.issue(
                path, "required: a list of one or more agents (name, engine or stt/llm/tts, system_prompt)"
            )
            return None
        if not isinstance(raw, list) or not raw:
            self.issue(
                path,
                f"expected a list of one or more agents, got {_type_name(raw) if raw != [] else 'an empty list'}",
            )
            return None
        agents: list[AgentConfig] = []
        for index, item in enumerate(raw):
            agent = self.agent(item, (*path, index))
            if agent is not None:
                agents.append(agent)
        # checked on the raw values so a duplicate is reported even when that agent has other errors
        for key, what in (("name", "agent name"), ("phone_number", "agent phone_number")):
            seen: dict[Any, int] = {}
            for index, item in enumerate(raw):
                value = item.get(key) if isinstance(item, dict) else None
                if not isinstance(value, str):
                    continue
                if value in seen:
                    self.issue(
                        (*path, index, key), f"duplicate {what} {value!r} (also agents[{seen[value]}])"
                    )
                seen.setdefault(value, index)
        return agents if len(agents) == len(raw) else None

    def agent(self, raw: Any, path: YamlPath) -> AgentConfig | None:
        if not isinstance(raw, dict):
            self.issue(
                path, f"expected an agent mapping (name, engine or stt/llm/tts, …), got {_type_name(raw)}"
            )
            return None
        ok = True
        sections: dict[str, ProviderSection] = {}
        for role in PROVIDER_ROLES:
            if raw.get(role) is None:
                continue
            if isinstance(raw[role], list):
                section = self.chain(role, raw[role], (*path, role))
            else:
                section = self.provider(role, raw[role], (*path, role))
            if section is None:
                ok = False
            else:
                sections[role] = section
        present = {role for role in PROVIDER_ROLES if raw.get(role) is not None}
        if {"stt", "tts"} <= present and not present & {"llm", "engine"}:
            # Patter's pipeline-mode default: an agent with stt and tts but no llm talks to OpenAI.
            present.add("llm")
            llm = self.default_llm(path)
            if llm is None:
                ok = False
            else:
                sections["llm"] = llm
        problem = pipeline_problem(present)
        if problem:
            self.issue(path, problem)
            ok = False
        tools: list[Section] = []
        raw_tools = raw.get("tools")
        if raw_tools is not None and not isinstance(raw_tools, list):
            self.issue((*path, "tools"), f"expected a list of tools, got {_type_name(raw_tools)}")
            ok = False
        for index, item in enumerate(raw_tools if isinstance(raw_tools, list) else []):
            tool = self.tool(item, (*path, "tools", index))
            ok = ok and tool is not None
            if tool is not None:
                tools.append(tool)
        rest = {k: v for k, v in raw.items() if k not in PROVIDER_ROLES and k != "tools"}
        agent = self.model(AgentConfig, {**rest, **sections, "tools": tools}, path)
        return agent if ok and agent is not None else None

    def tool(self, raw: Any, path: YamlPath) -> Section | None:
        if not isinstance(raw, dict):
            self.issue(
                path, f"expected a tool mapping with a type ({', '.join(TOOL_TYPES)}), got {_type_name(raw)}"
            )
            return None
        kind = raw.get("type")
        if kind is None:
            self.issue((*path, "type"), f"required: one of {', '.join(TOOL_TYPES)}", self.doc.line(path))
            return None
        model = TOOL_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            close = difflib.get_close_matches(str(kind), list(TOOL_TYPES), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(TOOL_TYPES)}"
            self.issue((*path, "type"), f"unknown tool type {kind!r}; {hint}")
            return None
        return cast(Section | None, self.model(model, raw, path))

    # ------------------------------------------------------------------ providers

    def default_llm(self, path: YamlPath) -> ProviderSection | None:
        """`llm: {type: openai, model: gpt-4o-mini}` for a pipeline agent without `llm:`; its issues say so."""
        before = len(self.issues)
        section = self.provider("llm", dict(DEFAULT_LLM), (*path, "llm"))
        for index in range(before, len(self.issues)):
            issue = self.issues[index]
            self.issues[index] = ConfigIssue(
                issue.path,
                f"no llm given, so the default llm.openai ({DEFAULT_LLM['model']}) is used: {issue.message}",
                issue.line,
            )
        return section

    def chain(self, kind: str, raw: list[Any], path: YamlPath) -> ProviderSection | None:
        """`stt: [{type: a}, {type: b}]`: a fallback chain, every member validated at its own path."""
        if kind not in CHAIN_ROLES:
            self.issue(path, f"only {', '.join(CHAIN_ROLES)} may list fallback providers; give one mapping")
            return None
        if not raw:
            self.issue(path, f"expected one or more {kind} providers, got an empty list")
            return None
        members = [self.provider(kind, item, (*path, index)) for index, item in enumerate(raw)]
        if any(member is None for member in members):
            return None
        first, *rest = cast(list[ProviderSection], members)
        return first.model_copy(update={"fallbacks": tuple(rest)})
