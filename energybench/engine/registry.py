"""Engine names -> factories: the built-in `reference`, `fast` and `fast_tuned`, and any a site module registers.

Torch-free, so config validation reads the names without loading an engine. A factory is a callable
`(model, sampling, generator) -> Engine` or a "module:attribute" string imported on first use. An
engine that can serve requests over time (workload=online) registers an `online` factory whose engine
also has `serve` (energybench.engine.continuous.ContinuousEngine is `fast`'s).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Union

from energybench.plugins import load_plugins

Factory = Union[str, Callable[..., Any]]  # (model, sampling, generator) -> Engine, or "module:attribute"


class UnknownEngine(ValueError):
    """An engine name nothing registered; the message lists the registered names."""


@dataclass(frozen=True)
class EngineEntry:
    name: str  # the value of `engine=` and of the results' engine column
    offline: Factory  # engine for workload=offline (generate batches)
    online: Factory | None = None  # engine with `serve` for workload=online; None: offline only
    compiles: bool = False  # torch.compiles on GPU: a point starts the compiler's imports while its weights load


_ENGINES: dict[str, EngineEntry] = {
    "reference": EngineEntry("reference", "energybench.engine.reference:ReferenceEngine"),
    "fast": EngineEntry("fast", "energybench.engine.fast:FastEngine", "energybench.engine.continuous:ContinuousEngine",
                        compiles=True),
    "fast_tuned": EngineEntry("fast_tuned", "energybench.engine.fast:tuned_engine", compiles=True),
}


def register_engine(name: str, factory: Factory, online: Factory | None = None, compiles: bool = False) -> None:
    """Make `engine=<name>` run `factory(model, sampling, generator)`; `online` serves workload=online;
    `compiles`: the engine torch.compiles on GPU (its points import the compiler while the weights load).

    Registering the same name again with the same factories is a no-op (a module imported twice);
    another factory under a taken name raises ValueError.
    """
    entry = EngineEntry(name, factory, online, compiles)
    taken = _ENGINES.get(name)
    if taken is not None and taken != entry:
        raise ValueError(f"engine {name!r} is already registered ({taken.offline}); pick another name")
    if not name or "/" in name or "-" in name:
        raise ValueError(f"engine name {name!r}: use letters, digits and underscores (it goes into point ids)")
    _ENGINES[name] = entry


def engine_names() -> tuple[str, ...]:
    """Every registered engine name, after importing the site's plugin modules (PluginError, a ValueError
    whose one line names the module, when one cannot be imported)."""
    load_plugins()
    return tuple(_ENGINES)


def online_engine_names() -> tuple[str, ...]:
    """The engines that can run workload=online (they registered an `online` factory)."""
    return tuple(n for n in engine_names() if _ENGINES[n].online is not None)


def engine_entry(name: str) -> EngineEntry:
    """The entry of `name`; UnknownEngine (one line, the registered names) when nothing registered it."""
    names = engine_names()
    if name not in _ENGINES:
        raise UnknownEngine(f"engine={name!r}: must be one of {', '.join(names)} "
                            "(a site engine registers itself in a module named by $ENERGYBENCH_PLUGINS)")
    return _ENGINES[name]


def make_engine(name: str, model: Any, sampling: Any, generator: Any, online: bool = False) -> Any:
    """The engine called `name` over `model` (an energybench.engine.base.Engine; with `serve` when online)."""
    entry = engine_entry(name)
    factory = entry.online if online else entry.offline
    if factory is None:
        raise UnknownEngine(f"engine={name} cannot serve workload=online; use one of {', '.join(online_engine_names())}")
    return resolve(factory)(model, sampling, generator)


def resolve(factory: Factory) -> Callable[..., Any]:
    """The callable a factory names ("module:attribute" imported now)."""
    if callable(factory):
        return factory
    module, _, attribute = factory.partition(":")
    return getattr(importlib.import_module(module), attribute)
