"""The scrape-time counters of a running daemon, read from its switchboard and store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from patterd.metrics import LiveCounters

if TYPE_CHECKING:
    from patterd.calls.switchboard import Switchboard


def switchboard_counters(
    board: Callable[[], Switchboard | None], store_errors: Callable[[], int]
) -> LiveCounters:
    """LiveCounters over whatever switchboard runs now (None before start: zeros)."""

    def active() -> dict[str, int]:
        counts: dict[str, int] = {}
        sb = board()
        for session in sb.calls.values() if sb else ():
            counts[session.agent.name] = counts.get(session.agent.name, 0) + 1
        return counts

    def media_frames() -> tuple[int, int]:
        sb = board()
        return sb.media_frames() if sb else (0, 0)

    def frames_dropped() -> dict[tuple[str, str], int]:
        sb = board()
        return dict(sb.bad_frames) if sb else {}

    def calls_refused() -> dict[tuple[str, str], int]:
        sb = board()
        return dict(sb.refused) if sb else {}

    def rejections() -> dict[tuple[str, str], int]:
        sb = board()
        return dict(sb.rejections) if sb else {}

    return LiveCounters(
        media_frames=media_frames,
        frames_dropped=frames_dropped,
        calls_refused=calls_refused,
        rejections=rejections,
        store_errors=store_errors,  # not stats(): that counts the index per scrape
        active_calls=active,
    )
