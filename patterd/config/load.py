"""Loads `patter.yaml` into a Config, collecting every problem into one ConfigError."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from patterd.config.cluster import ClusterConfig
from patterd.config.interpolate import interpolate_document, interpolate_lenient, load_dotenv, merge_environ
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
    is_loopback,
    pipeline_problem,
)
from patterd.config.persist import DatabaseURL, is_database_url, parse_database_url, resolve_persist
from patterd.config.yaml_lines import Document, PathPart, format_path, parse_yaml
from patterd.cost import pricing_problems
from patterd.errors import ConfigError, ConfigIssue, PluginError
from patterd.plugins.registry import Registry
from patterd.providers.spec import CarrierFacts, validation_environ

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
    "agents",
)
EXTENSION_PREFIX = "x-"
SECRET_WORDS = ("token", "key", "secret", "password")

YamlPath = tuple[PathPart, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)

_E164 = TypeAdapter(E164)
_PRICING = TypeAdapter(dict[str, dict[str, float]])
_HOST_PORT = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
    r"(?::(\d{1,5}))?$"
)


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


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    """`unknown key; did you mean voice_id?` or the list of keys that are allowed here."""
    names = sorted(set(known))
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return f"unknown key; expected one of: {', '.join(names)}" if names else "unknown key; none allowed here"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _is_secret(path: YamlPath) -> bool:
    return any(isinstance(p, str) and any(w in p.lower() for w in SECRET_WORDS) for p in path)


# The LLM of a pipeline agent that names none (Patter's pipeline-mode default; docs/configuration.md).
DEFAULT_LLM: Mapping[str, str] = {"type": "openai", "model": "gpt-4o-mini"}


class _Loader:
    """One pass over a parsed document; appends to `issues` instead of stopping."""

    def __init__(self, doc: Document, registry: Registry, environ: Mapping[str, str], base_dir: Path | None):
        self.doc = doc
        self.registry = registry
        self.environ = environ
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.context = {"environ": environ, "pipeline_checked": True}

    def issue(self, path: YamlPath, message: str, line: int | None = None) -> None:
        self.issues.append(
            ConfigIssue(format_path(path), message, line if line is not None else self.doc.line(path))
        )

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
        agents = self.agents(root.get("agents"))

        if self.issues or None in (carrier, server, logging, cluster, agents):
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
                agents=agents,
                digest=digest,
            )
        except ValidationError as exc:  # every part was validated above; this is a safety net
            self.pydantic_issues(exc, (), Config)
            return None

    def carrier_facts(self, carrier_type: Any) -> CarrierFacts | None:
        """What the registry says about carrier `carrier_type` (None: unknown, reported elsewhere)."""
        if not isinstance(carrier_type, str):
            return None
        try:
            return self.registry.get("carrier", carrier_type).carrier
        except PluginError:
            return None

    def default_carrier(self) -> ProviderSection | None:
        """No `carrier:` means the carrier whose spec says `default` (the built-in browser phone)."""
        name = self.registry.default_carrier()
        if name is None:
            self.issue(("carrier",), "no carrier is configured and no installed carrier is a default one")
            return None
        try:
            spec = self.registry.get("carrier", name)
            options = spec.options.model_validate({}, context=self.context)
        except (PluginError, ValidationError) as exc:
            message = f"no carrier is configured and the default carrier {name!r} is unusable: {exc}"
            self.issue(("carrier",), message)
            return None
        return ProviderSection(kind="carrier", type=name, options=options, spec=spec, line=None)

    def check_dashboard_token(self, server: ServerConfig | None, raw: Any) -> None:
        """A dashboard beyond loopback needs a token; judged from the raw keys if the section is invalid."""
        if server is not None:
            host, dashboard, token = server.host, server.dashboard, server.dashboard_token is not None
        else:
            raw = raw if isinstance(raw, dict) else {}
            host = raw.get("host") or self.environ.get("PATTER_BIND_HOST", "").strip() or "127.0.0.1"
            dashboard = raw.get("dashboard", True) not in (False, "false", "off", "no", 0)
            token = bool(raw.get("dashboard_token"))
            if not isinstance(host, str) or any(issue.path == "server.host" for issue in self.issues):
                return  # an invalid host is reported on its own
        if dashboard and not token and not is_loopback(host):
            raw_host = raw.get("host") if isinstance(raw, dict) else None
            origin = " from $PATTER_BIND_HOST" if raw_host is None and host != "127.0.0.1" else ""
            message = (
                "server.dashboard_token is required when server.host is not loopback "
                f"(host is {host!r}{origin} and the dashboard is on)"
            )
            # no `server:` in the file (the host came from the environment): no line to point at
            self.issues.append(ConfigIssue("server", message, self.doc.lines.get(("server",))))

    def check_reachable(
        self, carrier_type: Any, facts: CarrierFacts | None, raw_url: Any, raw_tunnel: Any
    ) -> None:
        """Carriers that call back over the internet: without webhook_url or a tunnel every call fails."""
        if facts is None or not facts.public_callbacks or raw_tunnel not in (None, False):
            return
        if raw_url not in (None, ""):
            return  # given (an invalid one is reported by webhook_url)
        vendor = facts.display_name(carrier_type)
        line = self.doc.line(("webhook_url",) if raw_url == "" else ("carrier", "type"))
        self.issue(
            ("webhook_url",),
            f"required when carrier is {carrier_type}: the public host[:port] {vendor} reaches for its "
            "webhooks and media streams (e.g. gw.example.com), or set `tunnel: true` to have patterd "
            "open a cloudflared tunnel, or `tunnel: {type: static, hostname: ...}`",
            line,
        )

    def webhook_url(self, raw: Any) -> tuple[str | None, str]:
        path: YamlPath = ("webhook_url",)
        if raw is None or raw == "":
            return None, "https"
        if not isinstance(raw, str):
            self.issue(path, f"expected a host[:port] string, got {_type_name(raw)}")
            return None, "https"
        text = raw.strip()
        scheme = "https"
        match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
        if match:
            scheme = match.group(1).lower()
            if scheme not in ("http", "https"):
                self.issue(
                    path,
                    f"scheme {scheme!r} not supported; give host[:port] (https implied) or an http(s):// URL",
                )
                return None, "https"
            text = text[match.end() :]
        text = text.rstrip("/")
        host = _HOST_PORT.match(text)
        if not host or (host.group(1) and not 0 < int(host.group(1)) < 65536):
            self.issue(
                path, f"expected a public host[:port] without a path, like abc.example.com, got {raw!r}"
            )
            return None, "https"
        return text, scheme

    def tunnel(self, raw: Any) -> ProviderSection | None:
        if raw is None or raw is False:
            return None
        if raw is True:
            raw = {"type": "cloudflared"}
        elif isinstance(raw, str):
            raw = {"type": raw}
        return self.provider("tunnel", raw, ("tunnel",))

    def persist(self, raw: Any) -> Path | DatabaseURL | None:
        if raw is not None and not isinstance(raw, bool | str):
            self.issue(
                ("persist",),
                f"expected true, false, a directory path or a postgresql:// URL, got {_type_name(raw)}",
            )
            return None
        if isinstance(raw, str) and is_database_url(raw):
            try:
                return parse_database_url(raw)
            except ValueError as exc:
                self.issue(("persist",), str(exc))
                return None
        path = resolve_persist(raw, self.environ)
        if path is not None and not path.is_absolute() and self.base_dir is not None and raw is not None:
            path = self.base_dir / path  # a path written in the file is relative to the file
        if path is not None and path.exists() and not path.is_dir():
            # the store would give up on its first write and keep no records at all
            problem = f"{str(path)!r} exists and is not a directory; call records need a directory"
            env_dir = self.environ.get("PATTER_LOG_DIR", "").strip()
            if raw is not None:
                self.issue(("persist",), problem)
            else:  # not in the file: say where the path came from instead of a line
                origin = f"$PATTER_LOG_DIR={env_dir!r}" if env_dir else "the default record directory"
                self.issues.append(ConfigIssue("persist", f"{origin}: {problem}"))
        return path

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

    def provider(self, kind: str, raw: Any, path: YamlPath) -> ProviderSection | None:
        if not isinstance(raw, dict):
            self.issue(
                path,
                f"expected a mapping with a type (one of {', '.join(self.registry.names(kind)) or 'none installed'}), got {_type_name(raw)}",
            )
            return None
        name = raw.get("type")
        if name is None:
            known = ", ".join(self.registry.names(kind)) or "none installed"
            self.issue(
                (*path, "type"), f"required: the {kind} provider to use (one of {known})", self.doc.line(path)
            )
            return None
        if not isinstance(name, str):
            self.issue((*path, "type"), f"expected a provider name, got {_type_name(name)}")
            return None
        try:
            spec = self.registry.get(kind, name)
        except PluginError as exc:
            self.issue((*path, "type"), str(exc))
            return None
        options = {k: v for k, v in raw.items() if k != "type"}
        validated = self.model(spec.options, options, path, extra_names=("type",))
        if validated is None:
            return None
        return ProviderSection(kind=kind, type=name, options=validated, spec=spec, line=self.doc.line(path))

    # ------------------------------------------------------------------ plain sections

    def section(self, model: type[BaseModel], raw: Any, path: YamlPath) -> Any:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.issue(path, f"expected a mapping, got {_type_name(raw)}")
            return None
        try:
            return model.model_validate(raw, context=self.context)
        except ValidationError as exc:
            self.pydantic_issues(exc, path, model, from_env=self.env_defaults(model, raw))
            return None

    def env_defaults(self, model: type[BaseModel], raw: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
        """The keys of `model` that the environment fills in here: key → (variable, value)."""
        out: dict[str, tuple[str, str]] = {}
        for key, var in getattr(model, "ENV_DEFAULTS", {}).items():
            value = self.environ.get(var, "").strip()
            if key not in raw and value:
                out[key] = (var, value)
        return out

    def model(
        self, model: type[ModelT], raw: Any, path: YamlPath, *, extra_names: tuple[str, ...] = ()
    ) -> ModelT | None:
        """`raw` validated as `model`, or None with every problem recorded under `path`."""
        try:
            return model.model_validate(raw, context=self.context)
        except ValidationError as exc:
            self.pydantic_issues(exc, path, model, extra_names=extra_names)
            return None

    def validate(self, adapter: TypeAdapter[Any], raw: Any, path: YamlPath) -> Any:
        if raw is None:
            return None
        try:
            return adapter.validate_python(raw, context=self.context)
        except ValidationError as exc:
            self.pydantic_issues(exc, path, None)
            return None

    def pydantic_issues(
        self,
        exc: ValidationError,
        prefix: YamlPath,
        model: type[BaseModel] | None,
        extra_names: tuple[str, ...] = (),
        from_env: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """One issue per pydantic error, with the full path and the line of the offending key.

        A value the environment supplied (`from_env`) is not in the file: its issue names the
        variable and has no line.
        """
        for err in exc.errors(include_url=False):
            loc: YamlPath = tuple(err["loc"])
            path = prefix + loc
            kind = err["type"]
            if from_env and len(loc) == 1 and loc[0] in from_env:
                var, value = from_env[str(loc[0])]
                choices = _literal_choices(model, str(loc[0]))
                if choices and kind == "literal_error":
                    message = f"${var}={value!r} is not one of {'|'.join(choices)}"
                else:
                    detail = _clean(err["msg"])
                    message = f"${var}={value!r} is invalid: {detail[:1].lower()}{detail[1:]}"
                self.issues.append(ConfigIssue(format_path(path), message, None))
                continue
            if kind == "extra_forbidden":
                names = _field_names_at(model, loc[:-1])
                message = unknown_key_message(
                    str(loc[-1]), names + (list(extra_names) if len(loc) == 1 else [])
                )
            elif kind == "missing":
                message = "required key is missing"
            else:
                message = _clean(err["msg"])
                value = err.get("input")
                custom = kind in ("value_error", "assertion_error")
                secret = _is_secret(path) or _is_secret_field(model, loc)
                if not custom and not secret and isinstance(value, str | int | float | bool):
                    message += f" (got {value!r})"
                elif not custom and isinstance(value, dict | list):
                    message += f" (got {_type_name(value)})"
            self.issue(path, message)


def _clean(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _literal_choices(model: type[BaseModel] | None, key: str) -> tuple[str, ...]:
    """The allowed values of a `Literal[...]` field of `model`, else ()."""
    field = model.model_fields.get(key) if model is not None else None
    if field is None or typing.get_origin(field.annotation) is not typing.Literal:
        return ()
    return tuple(str(choice) for choice in typing.get_args(field.annotation))


def _field_names_at(model: type[BaseModel] | None, loc: YamlPath) -> list[str]:
    """The keys allowed in the mapping at `loc` inside `model` (for did-you-mean)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _is_secret_field(model: type[BaseModel] | None, loc: YamlPath) -> bool:
    """True when the field at `loc` is typed SecretStr/SecretBytes, whatever its name."""
    names = [part for part in loc if isinstance(part, str)]
    if model is None or not names:
        return False
    parent = _field_names_at(model, tuple(names[:-1]))
    if names[-1] not in parent:
        return False
    current: Any = model
    for part in names[:-1]:
        current = _model_in(current.model_fields[part].annotation)
    field = current.model_fields.get(names[-1]) if current is not None else None
    return field is not None and "Secret" in repr(field.annotation)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `X | None`, `list[X]`, `dict[str, X]`, if there is exactly one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, dict, tuple, set, frozenset):
        found = [m for m in (_model_in(a) for a in typing.get_args(annotation)) if m is not None]
        return found[0] if len(found) == 1 else None
    return None
