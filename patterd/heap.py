"""The daemon's long-lived objects kept out of the cyclic collector's full passes (`gc.freeze`).

A full (generation 2) collection walks every tracked object and holds the GIL meanwhile: after start-up
that is the imported modules, the provider graph and the models' Python side, ~70,000 objects and 77 ms
on the reference machine, during which no call's audio moves (four frames late for every live call).
Frozen once the daemon has warmed up, they are no longer walked; what calls create is collected as
before. A reload thaws them first, so the graph it replaces can be collected once its calls have ended,
and freezes again when the new one has warmed up.
"""

from __future__ import annotations

import gc
import time

import structlog

log = structlog.get_logger("patterd.heap")


def freeze(generation: int) -> None:
    """Collect today's garbage, then move every surviving object to the permanent generation."""
    started = time.perf_counter()
    gc.collect()  # garbage frozen now would never be freed
    collect_ms = (time.perf_counter() - started) * 1000
    gc.freeze()
    log.info(
        "heap frozen", generation=generation, objects=gc.get_freeze_count(), collect_ms=round(collect_ms, 1)
    )


def thaw() -> None:
    """Put frozen objects back under the collector (before a reload replaces the graph among them)."""
    gc.unfreeze()
