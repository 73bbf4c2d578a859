"""Finds ProviderSpecs by entry point (`kind.name = "module:SPEC"`), imports each on first lookup by kind and name."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Collection, Iterable, Iterator
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
    """Every installed provider by `kind.name`; a spec's module is imported the first time it is asked for.

    The names come from entry-point metadata (no import), so `patterd run` imports only the providers its
    config uses plus the default carrier before ready, not every plugin (aiohttp, numpy, vendor SDKs…);
    the other carriers' routes are mounted right after ready (daemon_wiring.mount_other_carriers).
    Anything that needs the whole set (`specs`, `broken`, iteration) loads everything first, so listings,
    the schema and broken-plugin reports are as complete as before.
    """

    _specs: dict[str, LoadedSpec] = field(default_factory=dict)
    _broken: dict[str, str] = field(default_factory=dict)  # "kind.name" → what is wrong
    # "kind.name" → entry points not imported yet, in discovery order (a second one is a duplicate to report)
    _pending: dict[str, list[tuple[EntryPoint, str]]] = field(default_factory=dict)
    # Lookups come from the event loop and from threads (the warm-up prices carriers in one): a second
    # lookup of a key being imported waits for it instead of finding it neither pending nor loaded.
    _loading: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @property
    def specs(self) -> dict[str, LoadedSpec]:
        """Every provider that could be loaded (imports all pending ones)."""
        self._load_all()
        return self._specs

    @property
    def broken(self) -> dict[str, str]:
        """A clear message for every provider that could not be loaded (imports all pending ones)."""
        self._load_all()
        return self._broken

    def add(self, spec: ProviderSpec, distribution: str = "patterd") -> None:
        """Register a spec; a second spec with the same key is a PluginError."""
        if spec.kind not in KINDS:
            raise PluginError(f"{spec.key}: unknown kind {spec.kind!r}; expected one of {', '.join(KINDS)}")
        if spec.key in self._specs:
            other = self._specs[spec.key].distribution
            raise PluginError(f"{spec.key}: provided twice (by {other} and {distribution})")
        self._specs[spec.key] = LoadedSpec(spec, distribution)

    def defer(self, ep: EntryPoint, distribution: str) -> None:
        """Remember entry point `ep` (named `kind.name`) to import when that provider is first asked for."""
        self._pending.setdefault(ep.name, []).append((ep, distribution))

    def names(self, kind: str) -> list[str]:
        """Names of the loadable providers of one kind, sorted (imports that kind's pending ones)."""
        return sorted(s.spec.name for s in self.of_kind(kind))

    def of_kind(self, kind: str) -> list[LoadedSpec]:
        """The loadable providers of one kind, by name; only that kind's modules are imported."""
        prefix = f"{kind}."
        for key in [k for k in self._pending if k.startswith(prefix)]:
            self._load(key)
        return sorted((s for s in self._specs.values() if s.spec.kind == kind), key=lambda s: s.spec.name)

    def get(self, kind: str, name: str) -> ProviderSpec:
        """The spec for `kind.name`, or a PluginError naming the closest match."""
        spec = self.find(kind, name)
        if spec is not None:
            return spec
        key = f"{kind}.{name}"
        if key in self._broken:
            raise PluginError(f"{kind} provider {name!r} is installed but broken: {self._broken[key]}")
        raise PluginError(unknown_name_message(kind, name, self.names(kind)))

    def find(self, kind: str, name: str) -> ProviderSpec | None:
        """The spec for `kind.name` if it is installed and loads, else None; imports that module only."""
        key = f"{kind}.{name}"
        self._load(key)
        loaded = self._specs.get(key)
        return loaded.spec if loaded is not None else None

    def default_carrier(self) -> str | None:
        """The carrier a config without `carrier:` gets: the first (by name) whose facts say `default`.

        Carriers are imported in name order only up to that one (the built-in `local` sorts before the
        other built-ins), so finding it does not import every carrier before ready (issue 14).
        """
        names = {s.spec.name for s in self._specs.values() if s.spec.kind == "carrier"}
        names.update(k.partition(".")[2] for k in self._pending if k.startswith("carrier."))
        for name in sorted(names):
            self._load(f"carrier.{name}")
            loaded = self._specs.get(f"carrier.{name}")
            facts = loaded.spec.carrier if loaded is not None else None
            if facts is not None and facts.default:
                return name
        return None

    def pending_modules(self, kind: str) -> list[str]:
        """The modules of `kind`'s providers not imported yet (to import them off the event loop first)."""
        prefix = f"{kind}."
        return [ep.module for key, eps in self._pending.items() if key.startswith(prefix) for ep, _ in eps]

    def only_carriers(self, names: Collection[str]) -> Registry:
        """The same providers with only the carriers `names`: the routes the daemon mounts before ready.

        Specs are shared; the copy imports what it still lacks on its own (the modules are the same ones).
        """
        keep = {f"carrier.{name}" for name in names}

        def kept(key: str) -> bool:
            return not key.startswith("carrier.") or key in keep

        return Registry(
            _specs={k: v for k, v in self._specs.items() if kept(k)},
            _broken={k: v for k, v in self._broken.items() if kept(k)},
            _pending={k: list(v) for k, v in self._pending.items() if kept(k)},
        )

    def __iter__(self) -> Iterator[LoadedSpec]:
        return iter(sorted(self.specs.values(), key=lambda s: s.spec.key))

    def _load_all(self) -> None:
        for key in list(self._pending):
            self._load(key)

    def _load(self, key: str) -> None:
        """Import the pending entry points named `key`; what fails is recorded in `_broken`, never raised."""
        with self._loading:
            for ep, dist in self._pending.pop(key, ()):
                try:
                    self.add(_load_one(ep), dist)
                except PluginError as exc:
                    self._broken[ep.name] = str(exc)


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
    """Every `patterd.providers` entry point, imported on first use; broken ones are recorded, not raised."""
    registry = Registry()
    if eps is None:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    seen: set[tuple[str, str]] = set()
    for ep in eps:
        dist = ep.dist.name if ep.dist is not None else "unknown"
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        registry.defer(ep, dist)
    return registry
