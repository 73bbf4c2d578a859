"""heap: long-lived objects frozen out of full collections once warm, thawed for a reload, never pinned."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path
from typing import Any

from patterd import heap
from tests.daemon_process import run_daemon
from tests.inprocess_daemon import running_daemon

CONFIG = """\
carrier: {type: local}
agents:
  - name: desk
    stt: {type: offline}
    llm: {type: script, fallback: "Sorry?", intents: []}
    tts: {type: offline}
"""


class Cycle:
    """Garbage only the cyclic collector can free."""

    def __init__(self) -> None:
        self.me = self


def test_freeze_collects_first_then_keeps_survivors_out_of_collections_until_thawed() -> None:
    assert gc.get_freeze_count() == 0
    try:
        early = weakref.ref(Cycle())  # garbage already: freeze collects it rather than freezing it
        kept = Cycle()
        late = weakref.ref(kept)
        heap.freeze(0)
        assert early() is None
        assert gc.get_freeze_count() > 1000  # the test process's modules, classes, functions, and `kept`
        del kept  # garbage now, but frozen: no collection walks it
        gc.collect()
        assert late() is not None
        heap.thaw()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert late() is None  # thawed, the next collection frees it
    finally:
        heap.thaw()


def frozen(generation: int) -> Any:
    return lambda e: e.get("event") == "heap frozen" and e.get("generation") == generation


async def test_a_reload_thaws_the_heap_so_the_replaced_graphs_cycles_are_collected(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(CONFIG)
    try:
        async with running_daemon(config, freeze_heap=True) as (daemon, _, _):
            old = daemon.switchboard.graph
            old.probe = Cycle()  # type: ignore[attr-defined]  # cyclic garbage once the graph is dropped
            probe = weakref.ref(old.probe)  # type: ignore[attr-defined]
            heap.freeze(0)  # as the daemon's own freeze once warm: the probe is frozen with the graph
            del old
            result = await daemon.reload("test")
            assert result.ok, result
            async with asyncio.timeout(60):  # the new graph warms up, then the heap is collected and frozen
                while daemon.switchboard.graph.generation != 1 or gc.get_freeze_count() == 0:
                    await asyncio.sleep(0.01)
            assert probe() is None  # frozen, it would have stayed for as long as the daemon runs
    finally:
        heap.thaw()


def test_the_cli_freezes_once_warm_and_again_after_each_reload(tmp_path: Path) -> None:
    config = tmp_path / "patter.yaml"
    config.write_text(CONFIG)
    env = {"PATTER_LOG_DIR": str(tmp_path / "records"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with run_daemon(config, env=env, args=["--no-watch"]) as daemon:
        counts = [daemon.wait_log(frozen(0), timeout=60)["objects"]]
        for generation in (1, 2, 3, 4):
            status, body = daemon.request("POST", "/api/v1/reload")
            assert status == 200, body
            counts.append(daemon.wait_log(frozen(generation), timeout=60)["objects"])
    # Reloads of the same config add nothing that stays: the frozen heap does not grow reload by reload.
    assert counts[0] > 10_000
    assert max(counts[2:]) - min(counts[2:]) < 500, counts
