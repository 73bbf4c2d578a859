"""What core needs to know about a carrier, declared on its ProviderSpec (`carrier=CarrierFacts(...)`).

Core code (routes, config checks, cost, the switchboard) reads these facts from the registry and never
names a carrier: a third-party carrier package declares the same facts and is mounted, checked and
billed exactly like a built-in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Access = Literal["signature", "dashboard"]


def _prices(values: Mapping[str, float] | None = None) -> Mapping[str, float]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class CarrierFacts:
    """A carrier's routes, config needs, billing and access rule."""

    # POST route of its webhooks; `{name}` is the carrier's name, `{hook}` the last segment the
    # carrier's handle_webhook receives (`voice`, `status`, ...): contracts §3.
    webhook_path: str = "/webhooks/{name}/{hook}"
    # Its media websocket route with a `{call_id}` parameter; "" mounts none.
    media_path: str = ""
    # The config must name a phone_number: the carrier routes calls by the number it owns.
    needs_number: bool = True
    # Billed per started minute of call time when it reports no usage of its own (cost.telephony_minutes).
    per_minute: bool = True
    # Default USD prices by price key, e.g. {"inbound_per_minute": 0.0085, "outbound_per_minute": 0.014}.
    prices: Mapping[str, float] = field(default_factory=_prices, hash=False)  # a mapping: not hashable
    # "signature": each request proves itself (the carrier verifies its own signatures).
    # "dashboard": the dashboard's token rule, CSRF header and same-origin websockets (a browser phone).
    access: Access = "signature"
    # The carrier calls back over the internet: the config needs webhook_url or a tunnel.
    public_callbacks: bool = True
    # The carrier used when the config names none; it also runs beside any configured carrier.
    default: bool = False
    # The vendor's name as people write it, for messages ("Twilio"); "" → the carrier name capitalised.
    title: str = ""

    def __post_init__(self) -> None:
        # A frozen, read-only copy: specs are shared module constants.
        object.__setattr__(self, "prices", _prices(self.prices))

    def webhook_route(self, name: str) -> str:
        """The webhook route of carrier `name`, with `{hook}` left as the route parameter."""
        return self.webhook_path.replace("{name}", name)

    def display_name(self, name: str) -> str:
        """`Twilio` for messages: the title, else the carrier name capitalised."""
        return self.title or name.capitalize()
