"""Provider discovery through the `patterd.providers` entry-point group."""

from patterd.plugins.registry import ENTRY_POINT_GROUP, Registry, load_registry

__all__ = ["ENTRY_POINT_GROUP", "Registry", "load_registry"]
