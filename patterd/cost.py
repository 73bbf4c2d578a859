"""Default price table and per-call cost from Usage events (USD).

Units. A price key is `<quantity>_per_<unit>`; the quantity is a key of `Usage.quantities`
(what a provider reports) and the unit says how the quantity is scaled before multiplying:

| price key suffix   | quantity read from `Usage.quantities`                      | example key                          |
|--------------------|------------------------------------------------------------|--------------------------------------|
| `_per_million`     | `<quantity>` (a count, e.g. tokens) / 1,000,000            | `input_audio_tokens_per_million`     |
| `_per_thousand`    | `<quantity>` (a count, e.g. characters) / 1,000            | `characters_per_thousand`            |
| `_per_minute`      | `<quantity>_minutes`, else `<quantity>_seconds` / 60       | `audio_per_minute`, `inbound_per_minute` |
| `_per_unit`        | `<quantity>` as is                                         | `requests_per_unit`                  |

Quantities providers report (by convention): OpenAI Realtime `input_text_tokens`,
`input_audio_tokens`, `cached_input_tokens`, `output_text_tokens`, `output_audio_tokens`;
chat LLMs `input_tokens`, `cached_input_tokens`, `output_tokens`; STT `audio_seconds`;
TTS `characters`; carriers `inbound_minutes` / `outbound_minutes` (derived here from the call
duration, rounded up to whole minutes for carriers whose spec says `per_minute`, when the carrier
sent no usage).
Quantities without a price cost nothing.

Overrides come from `pricing:` in patter.yaml, by provider name and price key, and replace the
default of that key only, e.g. `pricing: {openai_realtime: {input_audio_tokens_per_million: 40}}`.
A provider missing from the table (offline built-ins, plugins) costs 0 unless priced there.
A carrier's default prices come from its spec (`CarrierFacts.prices`), not from this table, so a
carrier plugin is billed without editing core; docs/providers.md lists them ("Writing a carrier").

Default prices are public list prices (USD) as published in early 2026:
- openai_realtime (gpt-realtime): text in $4 / 1M tokens, audio in $32, cached in $0.40,
  text out $16, audio out $64 (openai.com/api/pricing).
- openai (LLM gpt-4o-mini: $0.15 / 1M in, $0.075 cached, $0.60 out; TTS tts-1: $15 / 1M chars).
  `tts.openai`'s default gpt-4o-mini-tts is billed by tokens ($0.60 / 1M text in, $12 / 1M audio
  out), which OpenAI estimates at $0.015 per minute of speech: at ~15 characters a second that is
  ≈ $16.7 / 1M characters, so the tts-1 price stands for both; tts-1-hd is $30 (override).
- whisper (`stt.whisper`, billed per minute of uploaded audio: default gpt-4o-mini-transcribe
  $0.003 / min; gpt-4o-transcribe and whisper-1 $0.006 / min: override `audio_per_minute`).
- anthropic (llm.anthropic's default claude-haiku-4-5: $1 / 1M in, $0.10 cache reads, $5 out;
  platform.claude.com/docs/en/about-claude/pricing). Cache writes (1.25x input) are billed as
  plain input. Another model needs `pricing: {anthropic: ...}`, e.g. claude-sonnet-4-6 $3 / $0.30 / $15.
- deepgram (Nova-3 monolingual streaming, pay as you go: $0.0077 / min of audio streamed,
  deepgram.com/pricing; pre-recorded is cheaper, $0.0043, but stt.deepgram only streams).
- elevenlabs (Flash/Turbo API: $0.05 / 1k characters, elevenlabs.io/pricing/api; the default model
  eleven_flash_v2_5 bills 1 credit per 2 characters, half of Multilingual v2, help.elevenlabs.io);
  elevenlabs_convai (agents: $0.10 / min).
- cartesia (docs.cartesia.ai/pricing bills credits: sonic TTS ~1 credit per character, $0.03 / 1k
  characters; ink-whisper streaming STT 1 credit per audio second, silence included, marketed at
  $0.13 / hour on the Scale plan = $0.0022 / min; ink-2 is 3 credits a second: override
  `audio_per_minute` to 0.0065), soniox ($0.002 / min),
  speechmatics ($0.0067 / min), assemblyai (Universal-Streaming $0.15 / h = $0.0025 / min; AssemblyAI
  bills the time a session is open, which `stt.assemblyai` keeps to the call: the audio streamed),
  rime ($0.04 / 1k chars),
  lmnt ($0.035 / 1k chars).
- carriers: their spec's `CarrierFacts.prices` (docs/providers.md).
- offline, script: 0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from patterd.providers.carrier_spec import CarrierFacts

if TYPE_CHECKING:
    from patterd.plugins.registry import Registry

Component = Literal["stt", "tts", "llm", "telephony"]
COMPONENTS: tuple[Component, ...] = ("stt", "tts", "llm", "telephony")
UNITS: dict[str, float] = {"million": 1_000_000.0, "thousand": 1_000.0, "minute": 1.0, "unit": 1.0}

DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "openai_realtime": {
        "input_text_tokens_per_million": 4.0,
        "input_audio_tokens_per_million": 32.0,
        "cached_input_tokens_per_million": 0.40,
        "output_text_tokens_per_million": 16.0,
        "output_audio_tokens_per_million": 64.0,
    },
    "openai": {
        "input_tokens_per_million": 0.15,
        "cached_input_tokens_per_million": 0.075,
        "output_tokens_per_million": 0.60,
        "characters_per_million": 15.0,
    },
    "whisper": {"audio_per_minute": 0.003},
    "anthropic": {
        "input_tokens_per_million": 1.0,
        "cached_input_tokens_per_million": 0.10,
        "output_tokens_per_million": 5.0,
    },
    "deepgram": {"audio_per_minute": 0.0077},
    "elevenlabs": {"characters_per_thousand": 0.05},
    "elevenlabs_convai": {"audio_per_minute": 0.10},
    "cartesia": {"characters_per_thousand": 0.03, "audio_per_minute": 0.0022},
    "soniox": {"audio_per_minute": 0.002},
    "speechmatics": {"audio_per_minute": 0.0067},
    "assemblyai": {"audio_per_minute": 0.0025},
    "rime": {"characters_per_thousand": 0.04},
    "lmnt": {"characters_per_thousand": 0.035},
    "offline": {},
    "script": {},
}

Pricing = Mapping[str, Mapping[str, float]]


def split_price_key(key: str) -> tuple[str, str]:
    """`input_tokens_per_million` → (`input_tokens`, `million`); ValueError if the unit is unknown."""
    quantity, sep, unit = key.rpartition("_per_")
    if not sep or not quantity or unit not in UNITS:
        raise ValueError(
            f"price key {key!r} is not <quantity>_per_<unit> with unit one of {', '.join(UNITS)}"
        )
    return quantity, unit


def pricing_problems(overrides: Pricing) -> list[str]:
    """Every problem in a `pricing:` mapping, as `provider.key: message` (empty when valid)."""
    problems: list[str] = []
    for provider, prices in overrides.items():
        if not isinstance(prices, Mapping):
            problems.append(f"{provider}: expected a mapping of price keys to USD, got {prices!r}")
            continue
        for key, value in prices.items():
            try:
                split_price_key(key)
            except ValueError as exc:
                problems.append(f"{provider}.{key}: {exc}")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(f"{provider}.{key}: price is {value!r}; expected a number ≥ 0 (USD)")
    return problems


@functools.cache
def carrier_facts(name: str) -> CarrierFacts | None:
    """One installed carrier's facts, None if `name` is no carrier (entry points: fixed at run time).

    Only that carrier's module is imported. Costs are priced on the event loop (a live call's cost in
    every listing): importing every installed carrier there held the loop ~170 ms on the first listing
    after a start, waiting on the import lock of the carriers being mounted behind readiness.
    """
    spec = _registry().find("carrier", name)
    return spec.carrier if spec is not None else None


@functools.cache
def _registry() -> Registry:
    from patterd.plugins.registry import load_registry  # cost sits below plugins; loaded on first use

    return load_registry()


def default_prices(provider: str) -> Mapping[str, float]:
    """A provider's default prices: the table above, else its carrier spec's, else none."""
    prices = DEFAULT_PRICES.get(provider)
    if prices is not None:
        return prices
    facts = carrier_facts(provider)
    return facts.prices if facts is not None else {}


def prices_for(provider: str, overrides: Pricing = {}) -> dict[str, float]:  # noqa: B006 (read-only)
    """The effective price table of one provider: defaults, then overrides key by key."""
    return {**default_prices(provider), **overrides.get(provider, {})}


def _scaled(quantities: Mapping[str, float], quantity: str, unit: str) -> float:
    if unit == "minute":
        if f"{quantity}_minutes" in quantities:
            return float(quantities[f"{quantity}_minutes"])
        return float(quantities.get(f"{quantity}_seconds", 0.0)) / 60.0
    return float(quantities.get(quantity, 0.0)) / UNITS[unit]


def price_usage(provider: str, quantities: Mapping[str, float], overrides: Pricing = {}) -> float:  # noqa: B006
    """USD for `quantities` reported by `provider` (unpriced quantities cost nothing)."""
    total = 0.0
    for key, price in prices_for(provider, overrides).items():
        quantity, unit = split_price_key(key)
        total += price * _scaled(quantities, quantity, unit)
    return total


def telephony_minutes(carrier: str, direction: str, duration_ms: int | None) -> dict[str, float]:
    """Billable carrier minutes of a call: whole minutes rounded up, for per-minute carriers."""
    facts = carrier_facts(carrier)
    if facts is None or not facts.per_minute or not duration_ms or duration_ms <= 0:
        return {}
    return {f"{direction}_minutes": float(math.ceil(duration_ms / 60_000))}


def call_cost(
    usages: Iterable[tuple[str, str, Mapping[str, float]]],
    *,
    carrier: str = "",
    direction: str = "inbound",
    duration_ms: int | None = None,
    overrides: Pricing = {},  # noqa: B006
) -> dict[str, float]:
    """Cost breakdown {total, stt, tts, llm, telephony} from (component, provider, quantities) usages.

    When no usage reports telephony, per-minute carriers are billed from the call duration.
    """
    parts: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
    has_telephony = False
    for component, provider, quantities in usages:
        if component not in parts:
            continue
        has_telephony = has_telephony or component == "telephony"
        parts[component] += price_usage(provider, quantities, overrides)
    if not has_telephony:
        minutes = telephony_minutes(carrier, direction, duration_ms)
        if minutes:
            parts["telephony"] += price_usage(carrier, minutes, overrides)
    out = {name: round(value, 6) for name, value in parts.items()}
    return {"total": round(sum(parts.values()), 6), **out}
