"""Renders the dashboard's plot (hourly call volume bars, p50/p95 turn latency lines) as inline SVG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

WIDTH, HEIGHT = 960, 230
LEFT, RIGHT, TOP, BOTTOM = 44, 56, 28, 30


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ value (axis maxima people can read)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value - 1e-9:
            return candidate
    return 10.0 ** (exponent + 1)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 10 or value == 0 else f"{value:.1f} ms"


def _hour(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%H:00")
    except ValueError:
        return iso


def _line(points: Sequence[tuple[float, float] | None]) -> str:
    """An SVG path through the points; None breaks the line (an hour without latency data)."""
    parts: list[str] = []
    pen_up = True
    for point in points:
        if point is None:
            pen_up = True
            continue
        parts.append(f"{'M' if pen_up else 'L'}{_fmt(point[0])},{_fmt(point[1])}")
        pen_up = False
    return " ".join(parts)


def render_chart(stats: dict[str, Any]) -> str:
    """The `<svg>` for hourly_stats() output: bars on the left axis, latency lines on the right one."""
    hours: list[dict[str, Any]] = stats.get("hours", [])
    totals: dict[str, Any] = stats.get("totals", {})
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    count = max(1, len(hours))
    slot = plot_w / count
    # At least 4 so a quiet day gets whole-number ticks (0, 1, 2, 3, 4) rather than 0.25 calls.
    max_calls = max(4.0, nice_ceiling(max((h["calls"] for h in hours), default=0)))
    latencies = [h[k] for h in hours for k in ("p50_ms", "p95_ms") if h.get(k) is not None]
    max_ms = nice_ceiling(max(latencies, default=0.0))

    def y_calls(value: float) -> float:
        return TOP + plot_h - plot_h * value / max_calls

    def y_ms(value: float) -> float:
        return TOP + plot_h - plot_h * value / max_ms

    p50 = totals.get("p50_ms")
    p95 = totals.get("p95_ms")
    summary = (
        f"{totals.get('calls', 0)} call{'' if totals.get('calls') == 1 else 's'} in the last {len(hours)} hours, {totals.get('failed', 0)} failed; "
        f"turn latency p50 {_ms(p50) if p50 is not None else 'n/a'}, p95 {_ms(p95) if p95 is not None else 'n/a'}."
    )
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title chart-desc"'
        ' xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Calls per hour and turn latency, last 24 hours (UTC)</title>',
        f'<desc id="chart-desc">{escape(summary)}</desc>',
    ]
    for i in range(5):  # horizontal grid with both scales
        frac = i / 4
        y = TOP + plot_h - plot_h * frac
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>')
        out.append(
            f'<text class="axis" x="{LEFT - 6}" y="{_fmt(y + 4)}" text-anchor="end">{_fmt(max_calls * frac)}</text>'
        )
        if latencies:  # no latency axis without latency data
            out.append(
                f'<text class="axis" x="{WIDTH - RIGHT + 6}" y="{_fmt(y + 4)}">{escape(_ms(max_ms * frac))}</text>'
            )
    p50_points: list[tuple[float, float] | None] = []
    p95_points: list[tuple[float, float] | None] = []
    for i, hour in enumerate(hours):
        x = LEFT + slot * i
        center = x + slot / 2
        calls = int(hour["calls"])
        label = (
            f"{_hour(hour['start'])} UTC: {calls} call{'s' if calls != 1 else ''}"
            f", {hour.get('failed', 0)} failed"
            f", p50 {_ms(hour['p50_ms']) if hour.get('p50_ms') is not None else 'n/a'}"
            f", p95 {_ms(hour['p95_ms']) if hour.get('p95_ms') is not None else 'n/a'}"
        )
        if calls:
            top = y_calls(calls)
            out.append(
                f'<rect class="bar" x="{_fmt(x + slot * 0.15)}" y="{_fmt(top)}" width="{_fmt(slot * 0.7)}"'
                f' height="{_fmt(TOP + plot_h - top)}"><title>{escape(label)}</title></rect>'
            )
        # An invisible full-height target so every hour has a tooltip, even an empty one.
        out.append(
            f'<rect class="hit" x="{_fmt(x)}" y="{TOP}" width="{_fmt(slot)}" height="{plot_h}">'
            f"<title>{escape(label)}</title></rect>"
        )
        p50_points.append((center, y_ms(hour["p50_ms"])) if hour.get("p50_ms") is not None else None)
        p95_points.append((center, y_ms(hour["p95_ms"])) if hour.get("p95_ms") is not None else None)
        if i % 4 == 0:
            out.append(
                f'<text class="axis" x="{_fmt(center)}" y="{HEIGHT - 10}" text-anchor="middle">'
                f"{escape(_hour(hour['start']))}</text>"
            )
    for name, points in (("p95", p95_points), ("p50", p50_points)):
        path = _line(points)
        if path:
            out.append(f'<path class="line {name}" d="{path}"/>')
        for point in points:
            if point is not None:
                out.append(
                    f'<circle class="dot {name}" cx="{_fmt(point[0])}" cy="{_fmt(point[1])}" r="2.5"/>'
                )
    out.append(
        f'<g class="legend" transform="translate({LEFT},14)">'
        '<rect class="bar" x="0" y="-8" width="10" height="10"/><text x="14" y="1">calls</text>'
        '<path class="line p50" d="M64,-3 L84,-3"/><text x="88" y="1">p50 latency</text>'
        '<path class="line p95" d="M168,-3 L188,-3"/><text x="192" y="1">p95 latency</text>'
        "</g>"
    )
    if not totals.get("calls"):
        out.append(
            f'<text class="empty" x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" text-anchor="middle">'
            "No calls in the last 24 hours</text>"
        )
    out.append("</svg>")
    return "".join(out)
