"""Cost: default prices, overrides, carrier minutes, the per-call breakdown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from patterd.cost import (
    DEFAULT_PRICES,
    call_cost,
    price_usage,
    pricing_problems,
    split_price_key,
    telephony_minutes,
)


def test_every_default_price_key_is_well_formed() -> None:
    for provider, prices in DEFAULT_PRICES.items():
        assert pricing_problems({provider: prices}) == []
    assert DEFAULT_PRICES["offline"] == {}


def test_realtime_tokens() -> None:
    quantities = {
        "input_audio_tokens": 1_000_000,
        "output_audio_tokens": 500_000,
        "cached_input_tokens": 1_000_000,
    }
    assert price_usage("openai_realtime", quantities) == pytest.approx(32 + 32 + 0.40)


def test_override_replaces_one_key_only() -> None:
    overrides = {"openai_realtime": {"input_audio_tokens_per_million": 40.0}}
    quantities = {"input_audio_tokens": 1_000_000, "output_audio_tokens": 1_000_000}
    assert price_usage("openai_realtime", quantities, overrides) == pytest.approx(40 + 64)


def test_seconds_and_minutes_and_characters() -> None:
    assert price_usage("deepgram", {"audio_seconds": 120}) == pytest.approx(2 * 0.0077)
    assert price_usage("elevenlabs", {"characters": 2000}) == pytest.approx(0.10)
    assert price_usage("twilio", {"outbound_minutes": 3}) == pytest.approx(0.042)
    assert price_usage("some_plugin", {"characters": 10**9}) == 0.0
    assert (
        price_usage("some_plugin", {"characters": 1000}, {"some_plugin": {"characters_per_unit": 0.001}})
        == 1.0
    )


def test_telephony_minutes_round_up_for_per_minute_carriers() -> None:
    assert telephony_minutes("twilio", "inbound", 60_001) == {"inbound_minutes": 2.0}
    assert telephony_minutes("telnyx", "outbound", 1) == {"outbound_minutes": 1.0}
    assert telephony_minutes("local", "inbound", 600_000) == {}
    assert telephony_minutes("twilio", "inbound", 0) == {}


def test_call_cost_breakdown() -> None:
    usages: list[tuple[str, str, dict[str, float]]] = [
        ("stt", "deepgram", {"audio_seconds": 60.0}),
        ("llm", "openai", {"input_tokens": 1_000_000, "output_tokens": 100_000}),
        ("tts", "elevenlabs", {"characters": 1000.0}),
    ]
    cost = call_cost(usages, carrier="telnyx", direction="inbound", duration_ms=90_000)
    assert cost == {"total": 0.2747, "stt": 0.0077, "tts": 0.05, "llm": 0.21, "telephony": 0.007}
    reported = [*usages, ("telephony", "telnyx", {"inbound_minutes": 1.0})]
    assert call_cost(reported, carrier="telnyx", duration_ms=90_000)["telephony"] == 0.0035


def test_bad_overrides_are_reported() -> None:
    problems = pricing_problems({"deepgram": {"audio_per_hour": 1.0, "audio_per_minute": -1}, "x": 3})  # type: ignore[dict-item]
    assert problems == [
        "deepgram.audio_per_hour: price key 'audio_per_hour' is not <quantity>_per_<unit> with unit one of million, thousand, minute, unit",
        "deepgram.audio_per_minute: price is -1; expected a number ≥ 0 (USD)",
        "x: expected a mapping of price keys to USD, got 3",
    ]
    with pytest.raises(ValueError, match="price key 'tokens'"):
        split_price_key("tokens")


def test_pricing_a_call_imports_its_own_carrier_only() -> None:
    # Costs are priced on the event loop (every listing prices its live calls): the first one must not
    # import every installed carrier there. A fresh interpreter, so no test before this one imported them.
    script = """
import sys
from patterd.cost import call_cost, default_prices
assert call_cost([], carrier="twilio", duration_ms=61_000)["telephony"] > 0  # per-minute, from its facts
assert default_prices("deepgram") and default_prices("no-such-provider") == {}
carriers = {"twilio", "telnyx", "plivo", "signalwire", "vonage"}
print(sorted(c for c in carriers if f"patterd.providers.{c}" in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['twilio']"]
