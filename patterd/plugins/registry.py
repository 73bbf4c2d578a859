"""Loads ProviderSpecs from entry points (`kind.name = "module:SPEC"`) and looks them up by kind and name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from patterd.errors import PluginError
from patterd.providers.spec import KINDS, ProviderSpec

ENTRY_POINT_GROUP = "patterd.providers"


@dataclass(frozen=True)
class LoadedSpec:
    """A spec and the distribution that provided it."""

    spec: ProviderSpec
    distribution: str


@dataclass
class Registry:
    """Every provider that could be loaded, plus a clear message for every one that could not."""

    specs: dict[str, LoadedSpec] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # "kind.name" → what is wrong

    def add(self, spec: ProviderSpec, distribution: str = "patterd") -> None:
        """Register a spec; a second spec with the same key is a PluginError."""
        if spec.kind not in KINDS:
            raise PluginError(f"{spec.key}: unknown kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
        if spec.key in self.specs:
            other = self.specs[spec.key].distribution
            raise PluginError(f"{spec.key}: provided twice (by {other} and {distribution})")
        self.specs[spec.key] = LoadedSpec(spec, distribution)

    def names(self, kind: str) -> list[str]:
        """Names of the loaded providers of one kind, sorted."""
        return sorted(s.spec.name for s in self.specs.values() if s.spec.kind == kind)

    def get(self, kind: str, name: str) -> ProviderSpec:
        """The spec for `kind.name`, or a PluginError naming the closest match."""
        key = f"{kind}.{name}"
        if key in self.specs:
            return self.specs[key].spec
        if key in self.broken:
            raise PluginError(f"{kind} provider {name!r} is installed but broken: {self.broken[key]}")
        raise PluginError(unknown_name_message(kind, name, self.names(kind)))

    def default_carrier(self) -> str | None:
        """The carrier a config without `carrier:` gets: the first (by name) whose facts say `default`."""
        for name in self.names("carrier"):
            facts = self.specs[f"carrier.{name}"].spec.carrier
            if facts is not None and facts.default:
                return name
        return None

    def __iter__(self) -> Iterator[LoadedSpec]:
        return iter(sorted(self.specs.values(), key=lambda s: s.spec.key))


def unknown_name_message(kind: str, name: str, known: Iterable[str]) -> str:
    """`unknown tts type 'elevenlab'; did you mean 'elevenlabs'?` (or the list of known names)."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown {kind} type {name!r}; did you mean {close[0]!r}?"
    listing = ", ".join(repr(k) for k in known) or "none installed"
    return f"unknown {kind} type {name!r}; known: {listing}"


def _load_one(ep: EntryPoint) -> ProviderSpec:
    try:
        obj = ep.load()
    except Exception as exc:  # a plugin may fail in any way on import; report it, never crash
        raise PluginError(f"{ep.name}: cannot import {ep.value}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, ProviderSpec):
        raise PluginError(f"{ep.name}: {ep.value} is a {type(obj).__name__}, not a ProviderSpec")
    if obj.key != ep.name:
        raise PluginError(f"{ep.name}: {ep.value} declares itself as {obj.key!r}")
    return obj


def load_registry(eps: Iterable[EntryPoint] | None = None) -> Registry:
    """Load every `patterd.providers` entry point; broken ones are recorded, not raised."""
    registry = Registry()
    if eps is None:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    seen: set[tuple[str, str]] = set()
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else "unknown"
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        try:
            registry.add(_load_one(ep), dist)
        except PluginError as exc:
            registry.broken[ep.name] = str(exc)
    return registry
