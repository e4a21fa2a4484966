"""Import a site's own modules once ($ENERGYBENCH_PLUGINS, entry points), so their engines and datasets register."""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from typing import Mapping

PLUGINS_ENV = "ENERGYBENCH_PLUGINS"  # comma-separated module names, e.g. ENERGYBENCH_PLUGINS=mysite.engines
ENTRY_POINT_GROUPS = ("energybench.engines", "energybench.datasets")  # installed packages' plugin modules

_loaded: set[str] = set()
_entry_points_read = False


class PluginError(ValueError):
    """A module named in $ENERGYBENCH_PLUGINS or an entry point that cannot be imported."""


def load_plugins(environ: Mapping[str, str] | None = None) -> list[str]:
    """Import every module of $ENERGYBENCH_PLUGINS and of the energybench.* entry point groups not yet
    imported; returns the modules imported by this call. Registration happens as the module runs.

    Raises PluginError naming the module and the variable when one cannot be imported.
    """
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get(PLUGINS_ENV, "").split(",") if n.strip()]
    global _entry_points_read
    points = [] if _entry_points_read else [ep for group in ENTRY_POINT_GROUPS for ep in entry_points(group=group)]
    _entry_points_read = True  # installed packages do not change under a running process: scan them once
    imported = []
    for name in names:
        if name in _loaded:
            continue
        _loaded.add(name)  # before importing: a module that queries a registry while loading does not recurse
        try:
            importlib.import_module(name)
        except Exception as e:  # ImportError, or the module itself raising while it registers
            _loaded.discard(name)
            raise PluginError(f"{PLUGINS_ENV}={env.get(PLUGINS_ENV)}: cannot import {name} "
                              f"({type(e).__name__}: {e}); put its folder on PYTHONPATH or fix the module") from None
        imported.append(name)
    for ep in points:
        key = f"{ep.group}:{ep.value}"
        if key not in _loaded:
            _loaded.add(key)
            try:
                ep.load()
            except Exception as e:
                _loaded.discard(key)
                raise PluginError(f"entry point {ep.name} = {ep.value} (group {ep.group}) cannot be loaded "
                                  f"({type(e).__name__}: {e}); fix or uninstall the package that declares it") from None
            imported.append(ep.value)
    return imported
