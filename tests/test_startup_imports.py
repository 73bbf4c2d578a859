"""What the daemon has imported when it becomes ready, and what its warm-up loads after (start-up, issue 14).

Ready within 1 s needs the start path to skip what only a call uses: numpy (the resamplers), aiohttp (webhook
tools, carrier REST, fleet reports), PyNaCl (Telnyx signatures), faster-whisper (its model loads after ready),
and the installed carriers the config does not use (their routes are mounted just after ready).
A fresh interpreter runs the real command line on the shipped offline config and records `sys.modules`
the moment the daemon turns SERVING (`/readyz` 200) and once its warm-up has finished; re-adding one of
these imports at module level anywhere on the start path fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import types
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from patterd.lazy import LazyModule, lazy_import
from patterd.plugins.registry import ENTRY_POINT_GROUP
from patterd.providers import offline_whisper

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "PATTERD_CONFIG")}

# Never imported before ready (prefixes: a package and its submodules).
NOT_BEFORE_READY = (
    "aiohttp",
    "numpy",
    "soxr",
    "nacl",
    "faster_whisper",
    "ctranslate2",
    "patterd.protocols.resample",
)

PROBE = r"""
import json, sys
from patterd import cli, daemon

seen = {}
real_warm_up = daemon.warm_up

class Probe(daemon.Daemon):
    def _become_serving(self):
        seen["ready"] = sorted(sys.modules)  # the state /readyz answers 200 for is set right here
        super()._become_serving()

async def warm_up_then_stop(graph):
    await real_warm_up(graph)
    await probe._carriers_mounted.wait()  # the unused carriers' routes, mounted after ready
    seen["warm"] = sorted(sys.modules)
    seen["whisper_loaded"] = any(
        getattr(getattr(p.instance, "engine", None), "loaded", False) for p in graph.providers
    )
    probe.request_stop()

def make(*args, **kwargs):
    global probe
    probe = Probe(*args, **kwargs)
    return probe

daemon.Daemon = make  # the CLI imports it at call time
daemon.warm_up = warm_up_then_stop
code = cli.main(["--config", sys.argv[1], "--bind", "127.0.0.1:0", "--no-watch"])
seen["code"] = code
with open(sys.argv[2], "w") as out:
    json.dump(seen, out)
"""


def unused_carrier_modules(*used: str) -> list[str]:
    """The modules of the installed carriers other than `used` (from entry points, nothing imported)."""
    eps = entry_points(group=ENTRY_POINT_GROUP)
    return sorted(
        {ep.module for ep in eps if ep.name.startswith("carrier.") and ep.name.partition(".")[2] not in used}
    )


def loaded(modules: list[str], prefix: str) -> list[str]:
    return [m for m in modules if m == prefix or m.startswith(prefix + ".")]


def test_the_default_config_is_ready_without_the_call_path_and_warms_it_after(tmp_path: Path) -> None:
    result = tmp_path / "modules.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT / "config" / "patter.yaml"), str(result)],
        env={**ENV, "PATTER_LOG_DIR": str(tmp_path / "records")},
        cwd=tmp_path,
        capture_output=True,
        check=True,
        timeout=120,
    )
    seen = json.loads(result.read_text())
    assert seen["code"] == 0
    ready, warm = seen["ready"], seen["warm"]
    assert "patterd.web.app" in ready and "patterd.providers.offline_stt" in ready  # it did build and mount
    for prefix in NOT_BEFORE_READY:
        assert not loaded(ready, prefix), f"{prefix} is imported before ready: {loaded(ready, prefix)[:5]}"
    # Only the built carriers (the config's `local`, which is also the default) are imported before ready;
    # every other installed carrier is imported after, with its routes (test_carrier_routes_after_ready.py).
    others = unused_carrier_modules("local")
    assert others, "the other built-in carriers are installed"
    assert not [m for m in others if m in ready], "a carrier the config does not use is imported before ready"
    assert all(m in warm for m in others)
    # The warm-up imports every call's audio path, and loads the whisper model when that engine is installed.
    assert "numpy" in warm and "patterd.protocols.resample" in warm
    if offline_whisper.available():
        assert "faster_whisper" in warm and seen["whisper_loaded"] is True


def test_a_lazy_module_imports_on_first_use_once_and_then_reads_like_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "lazy_probe_target"
    # A slow module body widens the window in which eight threads ask for it at once.
    (tmp_path / f"{name}.py").write_text("import time\ntime.sleep(0.05)\nVALUE = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = lazy_import(name)
    assert isinstance(module, LazyModule) and name not in sys.modules
    values: list[object] = []
    threads = [threading.Thread(target=lambda: values.append(module.VALUE)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = sys.modules[name]
    assert len(values) == 8 and all(v is real.VALUE for v in values)  # eight first uses, one module
    assert module.__dict__["VALUE"] is real.VALUE  # copied: later reads are plain attribute reads
    assert lazy_import(name) is real  # once imported, callers get the module itself
    assert isinstance(lazy_import("json"), types.ModuleType) and not isinstance(
        lazy_import("json"), LazyModule
    )
