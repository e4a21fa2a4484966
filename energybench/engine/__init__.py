"""Generation engines: `reference` (the paper's loop), `fast` (same model and sampling, built for speed),
`fast_tuned` (fast with its batch-1 matmuls through energybench's Triton kernel), and whatever a site registers
(energybench.engine.registry). Names resolve lazily: importing the package (config validation does) loads no
torch."""

from __future__ import annotations

from typing import Any

from energybench.engine.registry import make_engine, register_engine

_LAZY = {"BatchStats": "base", "Engine": "base", "NoHooks": "base", "PhaseHooks": "base", "Sampling": "sampling"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"energybench.engine.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'energybench.engine' has no attribute {name!r}")


__all__ = ["BatchStats", "Engine", "NoHooks", "PhaseHooks", "Sampling", "make_engine", "register_engine"]
