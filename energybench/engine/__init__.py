"""Generation engines: `reference` (the paper's loop) and `fast` (same model and sampling, built for speed)."""

from __future__ import annotations

import torch

from energybench.engine.base import BatchStats, NoHooks, PhaseHooks
from energybench.engine.sampling import Sampling
from energybench.model.llama import Transformer


def make_engine(name: str, model: Transformer, sampling: Sampling, generator: torch.Generator):
    """The engine called `name` over `model`; both expose generate(prompts, limits, hooks) -> BatchStats."""
    if name == "reference":
        from energybench.engine.reference import ReferenceEngine

        return ReferenceEngine(model, sampling, generator)
    if name == "fast":
        from energybench.engine.fast import FastEngine

        return FastEngine(model, sampling, generator)
    raise ValueError(f"engine={name!r}: must be reference or fast")


__all__ = ["BatchStats", "NoHooks", "PhaseHooks", "Sampling", "make_engine"]
