"""Sharding maths: along which dimension each parameter splits over model-parallel ranks, and full shapes."""

from __future__ import annotations

import torch
from fairscale.nn.model_parallel import initialize as fs_init
from fairscale.nn.model_parallel.layers import ColumnParallelLinear, ParallelEmbedding, RowParallelLinear


def shard_dims(model: torch.nn.Module) -> dict[str, int | None]:
    """Dimension along which each parameter is split over model-parallel ranks (None: replicated).

    Column-parallel weights [out/N, in] split dim 0; row-parallel weights [out, in/N] and the
    embedding [vocab, dim/N] split dim 1 -- the same layout as Meta's consolidated.NN.pth files.
    """
    dims: dict[str, int | None] = {}
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, ColumnParallelLinear):
                dims[name] = 0
            elif isinstance(module, (RowParallelLinear, ParallelEmbedding)):
                dims[name] = 1
            else:
                dims[name] = None
    return dims


def full_shape(local: torch.Size, dim: int | None, shards: int) -> tuple[int, ...]:
    """Logical (unsharded) shape of a parameter whose local shard has shape `local`."""
    shape = list(local)
    if dim is not None:
        shape[dim] *= shards
    return tuple(shape)


def expected_shapes(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], int | None]]:
    """Logical (unsharded) shape and parallel dimension of every parameter of `model` on this rank's group."""
    shards = fs_init.get_model_parallel_world_size()
    dims = shard_dims(model)
    return {name: (full_shape(p.shape, dims[name], shards), dims[name]) for name, p in model.named_parameters()}
