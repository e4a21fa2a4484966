"""Meta's consolidated.NN.pth checkpoints resharded to any shard count, and the checks every checkpoint format shares."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from fairscale.nn.model_parallel import initialize as fs_init

from energybench.config import ModelConfig
from energybench.model.llama import Transformer
from energybench.model.sharding import expected_shapes

log = logging.getLogger(__name__)

META_IGNORED = ("rope.freqs",)  # buffer saved by Meta's v1 code; recomputed here


class CheckpointError(ValueError):
    """A checkpoint that does not fit the configured model; the message names the tensor or field."""


def check_field(source: str, field: str, found: Any, key: str, wanted: Any, preset: str) -> None:
    if found != wanted:
        raise CheckpointError(
            f"{source}: {field}={found} but model {preset} has {key}={wanted}; "
            f"use the preset that matches the checkpoint or set model.{key}={found}"
        )


def shape_error(source: str, name: str, found: tuple[int, ...], wanted: tuple[int, ...], preset: str) -> CheckpointError:
    return CheckpointError(
        f"{source}: tensor {name} has shape {tuple(found)} but model {preset} expects {tuple(wanted)}"
    )


# ---- Meta: params.json + consolidated.NN.pth ---------------------------------------------------------


def meta_files(path: Path) -> list[Path]:
    files = sorted(path.glob("consolidated.*.pth"))
    if not files:
        raise CheckpointError(f"model.path={path}: no consolidated.NN.pth files (a Meta LLaMA checkpoint directory)")
    return files


def check_meta_params(path: Path, cfg: ModelConfig) -> None:
    """params.json against the preset: dim, layers, heads, FFN rule, norm eps, vocabulary, rope theta."""
    params_path = path / "params.json"
    if not params_path.is_file():
        raise CheckpointError(f"{path}: params.json is missing (Meta checkpoints carry it beside the .pth files)")
    params = json.loads(params_path.read_text())
    src = str(params_path)
    for field, key in (("dim", "dim"), ("n_layers", "n_layers"), ("n_heads", "n_heads")):
        check_field(src, field, params.get(field), key, getattr(cfg, key), cfg.name)
    if params.get("n_kv_heads") not in (None, params["n_heads"]):
        raise CheckpointError(f"{src}: n_kv_heads={params['n_kv_heads']} (grouped-query attention) is not LLaMA v1")
    if "multiple_of" in params and cfg.ffn_dim is None:
        check_field(src, "multiple_of", params["multiple_of"], "multiple_of", cfg.multiple_of, cfg.name)
    if params.get("ffn_dim_multiplier") is not None:
        raise CheckpointError(f"{src}: ffn_dim_multiplier={params['ffn_dim_multiplier']} is not LLaMA v1's FFN rule")
    if "norm_eps" in params:
        check_field(src, "norm_eps", float(params["norm_eps"]), "norm_eps", cfg.norm_eps, cfg.name)
    if params.get("vocab_size", -1) > 0:  # v1 ships -1: the tokenizer decides
        check_field(src, "vocab_size", params["vocab_size"], "vocab_size", cfg.vocab_size, cfg.name)
    if "rope_theta" in params:
        check_field(src, "rope_theta", float(params["rope_theta"]), "rope_theta", cfg.rope_theta, cfg.name)


def needed_files(n_files: int, rank: int, shards: int) -> list[int]:
    """Checkpoint files holding some of rank `rank`'s fraction [rank/shards, (rank+1)/shards) of a split tensor."""
    return [i for i in range(n_files) if i * shards < (rank + 1) * n_files and rank * n_files < (i + 1) * shards]


@torch.no_grad()
def load_meta_(model: Transformer, cfg: ModelConfig, path: Path) -> None:
    """Copy this rank's slice of every tensor out of the files that hold it (memory-mapped, read lazily).

    File i of N holds the slice [i F/N, (i+1) F/N) of a split tensor along its parallel dimension (full
    length F); rank r of S needs [r F/S, (r+1) F/S), so it opens only the files overlapping that range.
    """
    check_meta_params(path, cfg)
    files = meta_files(path)
    n_files, shards, rank = len(files), fs_init.get_model_parallel_world_size(), fs_init.get_model_parallel_rank()
    wanted = needed_files(n_files, rank, shards)
    states = {i: torch.load(files[i], map_location="cpu", weights_only=True, mmap=True) for i in wanted}
    check_meta_keys(states[wanted[0]], model, files[wanted[0]], cfg.name)
    params = dict(model.named_parameters())
    for name, (shape, dim) in expected_shapes(model).items():
        param = params[name]
        if dim is None:
            tensor = states[wanted[0]][name]
            if tuple(tensor.shape) != shape:
                raise shape_error(str(files[wanted[0]]), name, tuple(tensor.shape), shape, cfg.name)
            param.copy_(tensor)
            continue
        length, lo, hi = shape[dim], rank * shape[dim] // shards, (rank + 1) * shape[dim] // shards
        for i in wanted:
            tensor = states[i][name]
            found = list(tensor.shape)
            found[dim] *= n_files
            if tuple(found) != shape:
                raise shape_error(f"{path} ({n_files} files)", name, tuple(found), shape, cfg.name)
            f_lo, f_hi = i * length // n_files, (i + 1) * length // n_files
            a, b = max(lo, f_lo), min(hi, f_hi)
            param.narrow(dim, a - lo, b - a).copy_(tensor.narrow(dim, a - f_lo, b - a))
    log.info("loaded %s: files %s of %d for rank %d of %d", path, wanted, n_files, rank, shards)


def check_meta_keys(state: Mapping[str, torch.Tensor], model: Transformer, source: Path, preset: str) -> None:
    shapes = expected_shapes(model)
    for name, (shape, _) in shapes.items():
        if name not in state:
            raise CheckpointError(f"{source}: tensor {name} is missing (model {preset} expects shape {shape})")
    extra = sorted(set(state) - set(shapes) - set(META_IGNORED))
    if extra:
        raise CheckpointError(
            f"{source}: unexpected tensor {extra[0]} with shape {tuple(state[extra[0]].shape)} "
            f"(model {preset} has no such parameter)"
        )


def write_meta_checkpoint(state: Mapping[str, torch.Tensor], dims: Mapping[str, int | None], n_files: int,
                          path: Path, params: Mapping[str, Any]) -> None:
    """Write full tensors `state` as Meta does for `n_files` model-parallel ranks (split along `dims`)."""
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        part = {name: (t if dims[name] is None else t.chunk(n_files, dims[name])[i]).clone()
                for name, t in state.items()}
        tmp = path / f".consolidated.{i:02d}.pth.tmp"
        torch.save(part, tmp)
        tmp.replace(path / f"consolidated.{i:02d}.pth")
    (path / "params.json").write_text(json.dumps(dict(params)))
