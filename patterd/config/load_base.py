"""The config loader's machinery: issues with their lines, provider/section/model validation, pydantic errors worded."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from patterd.config.model import ProviderSection
from patterd.config.yaml_lines import Document, PathPart, format_path
from patterd.errors import ConfigIssue, PluginError
from patterd.plugins.registry import Registry

SECRET_WORDS = ("token", "key", "secret", "password")

YamlPath = tuple[PathPart, ...]
ModelT = TypeVar("ModelT", bound=BaseModel)


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


class LoaderBase:
    """Records issues against the document and validates providers, sections and models into them."""

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
