"""Generates the JSON Schema of `patter.yaml` (draft 2020-12) from the models and installed providers."""

from __future__ import annotations

import functools
import operator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from patterd.config.cluster import ClusterConfig
from patterd.config.fleet import DashboardConfig
from patterd.config.model import (
    CHAIN_ROLES,
    E164,
    PROVIDER_ROLES,
    AgentConfig,
    LoggingConfig,
    Section,
    ServerConfig,
)
from patterd.plugins.registry import Registry
from patterd.providers.spec import ProviderSpec

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# `port: ${PORT}` is a string until interpolation; the schema accepts a reference wherever a number goes
_REFERENCE = {"type": "string", "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}$"}


class _FileBase(Section):
    """The top level also allows `x-…` keys, which only hold YAML anchors."""

    model_config = ConfigDict(json_schema_extra={"patternProperties": {"^x-": {}}})


def json_schema(registry: Registry) -> dict[str, Any]:
    """The schema of the whole file, with each installed provider's options under its `type`."""
    roles = {kind: _kind_type(registry, kind) for kind in ("carrier", "tunnel", *PROVIDER_ROLES)}
    agent_fields: dict[str, Any] = {role: (roles[role] | None, None) for role in PROVIDER_ROLES}
    for role in CHAIN_ROLES:  # one provider, or a fallback chain tried in order
        if roles[role] is not None:
            chain = Annotated[list[roles[role]], Field(min_length=1)]  # type: ignore[valid-type]
            agent_fields[role] = (roles[role] | chain | None, None)
    agent = create_model("Agent", __base__=AgentConfig, **agent_fields)
    tunnel_names = registry.names("tunnel")
    tunnel_forms: list[Any] = [bool, roles["tunnel"]]
    if tunnel_names:
        tunnel_forms.insert(1, Literal[tuple(tunnel_names)])
    tunnel = functools.reduce(operator.or_, tunnel_forms)
    carrier = roles["carrier"]
    default_carrier = registry.default_carrier() or "an error"
    file_model = create_model(
        "PatterConfig",
        __base__=_FileBase,
        __doc__="patterd configuration (patter.yaml)",
        carrier=(carrier | None, Field(None, description=f"telephony carrier; omitted → {default_carrier}")),
        phone_number=(
            E164 | None,
            Field(
                None, description="E.164; required by carriers that route calls by number (docs/providers.md)"
            ),
        ),
        webhook_url=(
            str | None,
            Field(None, description="public host[:port] carriers reach (https implied)"),
        ),
        tunnel=(tunnel | None, Field(None, description="false | true | a tunnel type | {type: ...}")),
        persist=(bool | str | None, Field(None, description="records directory; omitted → $PATTER_LOG_DIR")),
        pricing=(dict[str, dict[str, float]], Field(default_factory=dict)),
        server=(ServerConfig, Field(default_factory=ServerConfig)),
        logging=(LoggingConfig, Field(default_factory=LoggingConfig)),
        cluster=(ClusterConfig, Field(default_factory=ClusterConfig)),
        dashboard=(DashboardConfig, Field(default_factory=DashboardConfig)),
        agents=(list[agent], Field(min_length=1)),
    )
    schema = _accept_references(file_model.model_json_schema())
    return {"$schema": DIALECT, **schema, "title": "patter.yaml"}


def _kind_type(registry: Registry, kind: str) -> Any:
    """The discriminated union of one kind's option models (or None when none is installed)."""
    models = [_options_model(loaded.spec) for loaded in registry if loaded.spec.kind == kind]
    if not models:
        return None
    if len(models) == 1:
        return models[0]
    return Annotated[functools.reduce(operator.or_, models), Field(discriminator="type")]


def _options_model(spec: ProviderSpec) -> type[BaseModel]:
    """`spec.options` plus its `type: <name>` key, named after the provider (e.g. `TtsElevenlabs`)."""
    name = spec.kind.title() + "".join(part.title() for part in spec.name.replace("-", "_").split("_"))
    type_field: Any = (Literal[spec.name], Field(description=spec.summary))
    strict: type[BaseModel] = create_model(name, __base__=spec.options, type=type_field)
    try:
        strict.model_json_schema()
    except Exception:  # a plugin's options may hold types JSON Schema cannot express; accept any keys
        return create_model(name, __config__=ConfigDict(extra="allow"), type=type_field)
    return strict


def _accept_references(node: Any) -> Any:
    """Let number, boolean, enum and patterned places also hold a `${VAR}` reference.

    A provider's `type` is a `const` and stays exact: it selects the options schema.
    """
    if isinstance(node, list):
        return [_accept_references(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _accept_references(value) for key, value in node.items()}
    if out.get("type") in ("integer", "number", "boolean") or "enum" in out or "pattern" in out:
        return {"anyOf": [out, dict(_REFERENCE)]}
    return out
