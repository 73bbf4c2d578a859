"""Renders the dashboard's plot (hourly call volume bars, p50/p95 turn latency lines) as inline SVG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from html import escape
from typing import Any

WIDTH, HEIGHT = 960, 244
MIN_WIDTH, MAX_WIDTH = 280, 2400
LEFT, RIGHT, TOP, BOTTOM = 44, 56, 28, 44
# The page asks for the chart at its real width so 12 px text stays 12 px; a narrow chart shows
# the most recent hours (slots at least this wide) and labels only every few hours.
MIN_SLOT_PX = 18
MIN_LABEL_GAP_PX = 46
SHOWN_HOURS = (24, 12, 8, 6)


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


def integer_step(value: float, ticks: int = 4) -> int:
    """A whole-number tick step (1, 2, 5 × 10^k) so `ticks` steps reach at least `value`."""
    need = max(1, math.ceil(value / ticks - 1e-9))
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= need:
                return step * magnitude
        magnitude *= 10


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if value >= 10 or value == 0 else f"{value:.1f} ms"


def _hour(iso: str, tz: tzinfo = UTC) -> str:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(tz).strftime("%H:%M")
    except ValueError:
        return iso


def hours_that_fit(width: int) -> int:
    """How many of the most recent hours a chart `width` px wide shows."""
    plot_w = width - LEFT - RIGHT
    return next((n for n in SHOWN_HOURS if plot_w / n >= MIN_SLOT_PX), SHOWN_HOURS[-1])


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


def render_chart(stats: dict[str, Any], *, width: int = WIDTH, tz: tzinfo = UTC, tz_name: str = "UTC") -> str:
    """The `<svg>` for hourly_stats() output: bars on the left axis, latency lines on the right one.

    `width` is the px width the page shows it at (the viewBox matches it, so text is drawn at its
    CSS size); hours are labelled in `tz`, named `tz_name` on the chart.
    """
    width = min(MAX_WIDTH, max(MIN_WIDTH, width))
    every_hour: list[dict[str, Any]] = stats.get("hours", [])
    hours = every_hour[-hours_that_fit(width) :]
    totals: dict[str, Any] = stats.get("totals", {})
    plot_w = width - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    count = max(1, len(hours))
    slot = plot_w / count
    label_every = max(1, math.ceil(MIN_LABEL_GAP_PX / slot))
    # Whole calls only: the step is an integer, so every tick is one.
    calls_step = integer_step(max((h["calls"] for h in hours), default=0))
    max_calls = calls_step * 4
    latencies = [h[k] for h in hours for k in ("p50_ms", "p95_ms") if h.get(k) is not None]
    max_ms = nice_ceiling(max(latencies, default=0.0))

    def y_calls(value: float) -> float:
        return TOP + plot_h - plot_h * value / max_calls

    def y_ms(value: float) -> float:
        return TOP + plot_h - plot_h * value / max_ms

    shown_calls = sum(int(h["calls"]) for h in hours)
    shown_failed = sum(int(h.get("failed", 0)) for h in hours)
    p50 = totals.get("p50_ms") if len(hours) == len(every_hour) else None
    p95 = totals.get("p95_ms") if len(hours) == len(every_hour) else None
    summary = f"{shown_calls} call{'' if shown_calls == 1 else 's'} in the last {len(hours)} hours, {shown_failed} failed"
    if len(hours) == len(every_hour):
        summary += (
            f"; turn latency p50 {_ms(p50) if p50 is not None else 'n/a'},"
            f" p95 {_ms(p95) if p95 is not None else 'n/a'}"
        )
    summary += f". Hours in {tz_name}."
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {HEIGHT}" width="{width}" height="{HEIGHT}" role="img"'
        f' aria-labelledby="chart-title chart-desc" data-hours="{len(hours)}" data-tz="{escape(tz_name)}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">Calls per hour and turn latency, last {len(hours)} hours ({escape(tz_name)})</title>',
        f'<desc id="chart-desc">{escape(summary)}</desc>',
    ]
    for i in range(5):  # horizontal grid with both scales
        frac = i / 4
        y = TOP + plot_h - plot_h * frac
        out.append(f'<line class="grid" x1="{LEFT}" x2="{width - RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}"/>')
        out.append(
            f'<text class="axis calls-tick" x="{LEFT - 6}" y="{_fmt(y + 4)}" text-anchor="end">{calls_step * i}</text>'
        )
        if latencies:  # no latency axis without latency data
            out.append(
                f'<text class="axis" x="{width - RIGHT + 6}" y="{_fmt(y + 4)}">{escape(_ms(max_ms * frac))}</text>'
            )
    p50_points: list[tuple[float, float] | None] = []
    p95_points: list[tuple[float, float] | None] = []
    for i, hour in enumerate(hours):
        x = LEFT + slot * i
        center = x + slot / 2
        calls = int(hour["calls"])
        label = (
            f"{_hour(hour['start'], tz)} {tz_name}: {calls} call{'s' if calls != 1 else ''}"
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
        # Counted from the newest hour, so the current hour always has its label.
        if (len(hours) - 1 - i) % label_every == 0:
            out.append(
                f'<text class="axis hour" x="{_fmt(center)}" y="{HEIGHT - 24}" text-anchor="middle">'
                f"{escape(_hour(hour['start'], tz))}</text>"
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
        '<path class="line p50" d="M48,-3 L64,-3"/><text x="68" y="1">p50 latency</text>'
        '<path class="line p95" d="M140,-3 L156,-3"/><text x="160" y="1">p95 latency</text>'
        "</g>"
        f'<text class="axis tz" x="{_fmt(LEFT + plot_w / 2)}" y="{HEIGHT - 4}" text-anchor="middle">'
        f"hour starting ({escape(tz_name)} time)</text>"
    )
    if not shown_calls:
        out.append(
            f'<text class="empty" x="{_fmt(LEFT + plot_w / 2)}" y="{_fmt(TOP + plot_h / 2)}" text-anchor="middle">'
            f"No calls in the last {len(hours)} hours</text>"
        )
    out.append("</svg>")
    return "".join(out)
