"""Modules imported on first use, so that start-up pays only for what serving needs (issue 14).

numpy (~0.2 s), aiohttp (~0.25 s: its connector builds an SSL context at import) and the like are
needed by a call or a provider, not to become ready. A module that uses one binds it like this, so
mypy sees the real module and the interpreter a stand-in that imports it on the first attribute read:

    if TYPE_CHECKING:
        import aiohttp
    else:
        aiohttp = lazy_import("aiohttp")

tests/test_startup_imports.py pins what the daemon must not have imported when it becomes ready.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands in for module `__name__`; the first attribute it lacks imports the real one (thread-safe).

    After the import it holds a copy of the real module's attributes, so later reads cost what a plain
    module attribute costs (per audio frame in places); what the real module adds later still resolves.
    """

    def __getattr__(self, attr: str) -> Any:
        # importlib's per-module lock makes concurrent first uses (event loop, worker threads) wait for one import.
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy_import(name: str) -> Any:
    """Module `name` if it is already imported, else a LazyModule that imports it on first use."""
    return sys.modules.get(name) or LazyModule(name)
