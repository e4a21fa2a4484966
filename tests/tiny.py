"""Tiny LLaMA shapes and helpers shared by the model and engine tests."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Iterator

import torch

from energybench.config import ModelConfig
from energybench.distributed import DistEnv, model_parallel

# 4 heads, so shards 1, 2 and 4 are valid; vocab and FFN sizes divide by 4 too
TINY = ModelConfig(name="tiny-test", dim=64, n_layers=2, n_heads=4, vocab_size=1000, multiple_of=32,
                   max_seq_len=256)
CPU = torch.device("cpu")


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(TINY, **changes)


@contextmanager
def one_process() -> Iterator[None]:
    """torch.distributed (gloo) and fairscale's model-parallel group over this process alone."""
    with model_parallel(DistEnv.single(), CPU):
        yield


def prompts_of(lengths: list[int], vocab: int, seed: int) -> list[list[int]]:
    """BOS + random ids (never BOS/EOS) of the given lengths."""
    gen = torch.Generator().manual_seed(seed)
    return [[1] + torch.randint(3, vocab, (n - 1,), generator=gen).tolist() for n in lengths]


@contextmanager
def cpu_model(max_batch: int = 8, max_seq: int = 64, seed: int = 7) -> Iterator:
    """The TINY model in fp32 on the CPU, in a one-process model-parallel group, its caches set up."""
    from energybench.model.build import build_model

    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=seed)
        model.setup_caches(max_batch, max_seq)
        yield model
