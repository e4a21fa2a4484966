"""Build a sharded LLaMA directly on its device in its dtype, and fill its weights."""

from __future__ import annotations

import hashlib
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from fairscale.nn.model_parallel import initialize as fs_init

from energybench.config import ModelConfig
from energybench.model.checkpoint import CheckpointError, load_meta_
from energybench.model.hf import load_hf_
from energybench.model.llama import Transformer
from energybench.model.sharding import full_shape, shard_dims

__all__ = ["born_on", "build_model", "init_random_", "load_weights_", "shard_dims"]  # shard_dims: tests' import

_CUDA_TENSOR_TYPES = {
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float32: "torch.cuda.FloatTensor",
}


@contextmanager
def born_on(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Scope in which new tensors are created on `device` in `dtype`, restored on exit.

    fairscale's layers allocate with the legacy `torch.Tensor(rows, cols)` constructor, which follows
    only the default tensor type (not `torch.device(...)` contexts); without this, every rank would
    first build its shard as float32 in host memory.
    """
    prev_dtype = torch.get_default_dtype()
    if device.type != "cuda":
        torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(prev_dtype)
        return
    prev_type = torch.empty(0).type()
    torch.cuda.set_device(device)
    with warnings.catch_warnings():  # deprecated since 2.1, yet the only switch the legacy constructor obeys
        warnings.simplefilter("ignore", UserWarning)
        torch.set_default_tensor_type(_CUDA_TENSOR_TYPES[dtype])
        try:
            yield
        finally:
            torch.set_default_tensor_type(prev_type)
            torch.set_default_dtype(prev_dtype)


def _param_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


@torch.no_grad()
def init_random_(model: Transformer, seed: int) -> None:
    """Fill every parameter with seeded random values, identical whatever the shard count.

    Each logical tensor is drawn whole on the weights' device (one at a time) and this rank keeps
    its slice. Linear weights ~ N(0, 1/fan_in) keep activations O(1) through any depth, embeddings
    ~ N(0, 1), norms = 1: logits come out with a standard deviation near 1, so sampling stays spread
    over many tokens and long generations stay finite in float16.
    """
    shards = fs_init.get_model_parallel_world_size()
    rank = fs_init.get_model_parallel_rank()
    dims = shard_dims(model)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.fill_(1.0)
            continue
        dim = dims[name]
        shape = full_shape(param.shape, dim, shards)
        gen = torch.Generator(device=param.device).manual_seed(_param_seed(seed, name))
        std = 1.0 if name == "tok_embeddings.weight" else 1.0 / math.sqrt(shape[1])
        full = torch.randn(shape, generator=gen, device=param.device, dtype=param.dtype).mul_(std)
        param.copy_(full if dim is None else full.chunk(shards, dim=dim)[rank])
        del full


def build_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, seed: int) -> Transformer:
    """The model of `cfg` for this model-parallel rank, on `device` in `dtype`, weights filled."""
    with born_on(device, dtype):
        model = Transformer(cfg)
    model.eval().requires_grad_(False)
    if cfg.weights == "random":
        init_random_(model, seed)
    else:
        load_weights_(model, cfg)
    return model


def load_weights_(model: Transformer, cfg: ModelConfig) -> None:
    """Fill this rank's shard of every parameter from the checkpoint at cfg.path (weights=meta|hf)."""
    path = Path(cfg.path or "").expanduser()
    if not path.is_dir():
        raise CheckpointError(f"model.path={cfg.path}: no such directory; point it at the checkpoint directory")
    if cfg.weights == "meta":
        load_meta_(model, cfg, path)
    elif cfg.weights == "hf":
        load_hf_(model, cfg, path)
    else:
        raise CheckpointError(f"model.weights={cfg.weights!r}: checkpoints are meta or hf")
