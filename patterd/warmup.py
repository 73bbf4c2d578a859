"""After ready: load what a call would otherwise wait for (numpy, offline models) while the daemon serves.

Readiness (`/readyz` 200) means a call can be answered: the config is valid, every provider is built and
checked, the carrier routes are mounted and the socket listens. Heavy things a call needs only once its
audio flows are loaded here instead, behind readiness (issue 14: ready within 1 s). A call that arrives
first still works: it imports the same modules itself (Python's import lock makes it wait for the warm-up's
import) or queues behind the model load, which the provider logs.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import structlog

from patterd.cost import carrier_facts

if TYPE_CHECKING:
    from patterd.graph import Graph

log = structlog.get_logger("patterd.warmup")

# Every call's audio path: Resampler / the zero-hold FIR (numpy), soxr (other rates: the softphone, TTS),
# call recordings (numpy). Imported on the loop by a call instead, soxr's numpy import held it ~150 ms.
CALL_PATH_MODULES = ("numpy", "patterd.protocols.resample", "soxr")


def import_modules(names: Iterable[str]) -> None:
    """Import each module (blocking; run in a thread)."""
    for name in names:
        importlib.import_module(name)


async def warm_up(graph: Graph, modules: Iterable[str] = CALL_PATH_MODULES) -> None:
    """Import `modules` in a thread, then await each built provider's optional `warm_up()`; never raises."""
    started = time.perf_counter()
    try:
        await asyncio.to_thread(import_modules, tuple(modules))
        # A live call's cost is priced in every listing: its carrier's facts (an entry-point scan, ~150 ms)
        # are looked up here rather than on the loop by the first listing.
        await asyncio.to_thread(lambda: [carrier_facts(name) for name in graph.carriers])
    except Exception:  # a call imports them again and reports what is wrong
        log.exception("warm-up import failed")
    for built in graph.providers:
        warm = getattr(built.instance, "warm_up", None)
        if warm is None:
            continue
        try:
            await warm()
        except Exception as exc:  # the provider's calls meet the same error and report it
            log.error("provider warm-up failed", provider=built.key, error=str(exc))
    log.info("warmed up", generation=graph.generation, seconds=round(time.perf_counter() - started, 3))
