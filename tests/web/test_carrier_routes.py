"""Carrier routes come from the registry's CarrierFacts: the built-ins keep contracts §3, a plugin gets its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from starlette.routing import Route, WebSocketRoute

from patterd.plugins import load_registry
from patterd.plugins.registry import Registry
from patterd.providers.spec import BuildContext, CarrierFacts, ProviderOptions, ProviderSpec
from patterd.web.carrier_routes import carrier_routes
from patterd.web.runtime import Runtime


@asynccontextmanager
async def _build(options: Any, ctx: BuildContext) -> AsyncIterator[Any]:
    yield object()


def _carrier(name: str, facts: CarrierFacts | None) -> ProviderSpec:
    return ProviderSpec(
        kind="carrier", name=name, options=ProviderOptions, build=_build, summary=name, carrier=facts
    )


def _paths(registry: Registry) -> set[tuple[str, str]]:
    routes = carrier_routes(cast(Runtime, None), registry)  # routes are built without touching the runtime
    out: set[tuple[str, str]] = set()
    for route in routes:
        assert isinstance(route, Route | WebSocketRoute)
        out.add(("POST" if isinstance(route, Route) else "WS", route.path))
    return out


def test_the_built_in_carriers_keep_the_contract_paths() -> None:
    paths = _paths(load_registry())
    assert {
        ("POST", "/webhooks/twilio/{hook}"),
        ("WS", "/ws/stream/{call_id}"),
        ("POST", "/webhooks/telnyx/{hook}"),
        ("WS", "/ws/telnyx/stream/{call_id}"),
        ("POST", "/webhooks/local/{hook}"),
        ("WS", "/ws/local/{call_id}"),
    } <= paths


def test_a_plugin_carrier_is_mounted_from_its_facts_and_one_without_facts_is_not() -> None:
    registry = Registry()
    registry.add(_carrier("acme", CarrierFacts(media_path="/ws/acme/{call_id}")), "acme-dist")
    registry.add(_carrier("quiet", CarrierFacts(webhook_path="/hooks/{name}/{hook}")), "quiet-dist")
    registry.add(_carrier("bare", None), "bare-dist")
    assert _paths(registry) == {
        ("POST", "/webhooks/acme/{hook}"),
        ("WS", "/ws/acme/{call_id}"),
        ("POST", "/hooks/quiet/{hook}"),  # no media_path: no websocket route
    }
