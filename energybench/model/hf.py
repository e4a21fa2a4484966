"""Hugging Face LLaMA directories (config.json + safetensors) read into the Meta-layout sharded model."""

from __future__ import annotations

import json
import logging
import re
from contextlib import ExitStack
from pathlib import Path

import torch
from fairscale.nn.model_parallel import initialize as fs_init

from energybench.config import ModelConfig
from energybench.model.checkpoint import CheckpointError, check_field, shape_error
from energybench.model.llama import Transformer
from energybench.model.sharding import expected_shapes

log = logging.getLogger(__name__)

_LAYER_NAMES = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w2": "mlp.down_proj",
    "feed_forward.w3": "mlp.up_proj", "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}
_ROTATED = ("attention.wq.weight", "attention.wk.weight")  # HF permutes their rows for rotate_half


def hf_name(name: str) -> str:
    """HF parameter name of a Meta-layout parameter name."""
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        raise KeyError(name)
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.weight"


def unpermute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo HF's conversion permutation of q/k rows: per head, halves [re..., im...] -> pairs (re, im).
    w: [n_heads * head_dim, dim] for `n_heads` whole heads."""
    rows, cols = w.shape
    return w.view(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


def check_hf_config(path: Path, cfg: ModelConfig) -> dict:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: config.json is missing (a Hugging Face LLaMA directory has one)")
    conf = json.loads(config_path.read_text())
    src = str(config_path)
    if conf.get("model_type") not in (None, "llama"):
        raise CheckpointError(f"{src}: model_type={conf['model_type']} is not llama")
    for field, key, wanted in (
        ("hidden_size", "dim", cfg.dim), ("num_hidden_layers", "n_layers", cfg.n_layers),
        ("num_attention_heads", "n_heads", cfg.n_heads), ("intermediate_size", "ffn_dim", cfg.hidden_dim),
        ("vocab_size", "vocab_size", cfg.vocab_size),
    ):
        check_field(src, field, conf.get(field), key, wanted, cfg.name)
    kv_heads = conf.get("num_key_value_heads") or conf["num_attention_heads"]
    if kv_heads != conf["num_attention_heads"]:
        raise CheckpointError(f"{src}: num_key_value_heads={kv_heads} (grouped-query attention) is not LLaMA v1")
    check_field(src, "rms_norm_eps", float(conf.get("rms_norm_eps", cfg.norm_eps)), "norm_eps", cfg.norm_eps, cfg.name)
    check_field(src, "rope_theta", float(conf.get("rope_theta", 10000.0)), "rope_theta", cfg.rope_theta, cfg.name)
    if conf.get("rope_scaling"):
        raise CheckpointError(f"{src}: rope_scaling={conf['rope_scaling']} is not LLaMA v1's rotary embedding")
    return conf


def weight_files(path: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file holding it."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return {name: path / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    single = path / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{path}: neither model.safetensors nor model.safetensors.index.json "
                              "(save the model with safe_serialization=True)")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}


@torch.no_grad()
def load_hf_(model: Transformer, cfg: ModelConfig, path: Path) -> None:
    """Copy this rank's slice of each tensor, reading only that slice from the safetensors files."""
    from safetensors import safe_open

    conf = check_hf_config(path, cfg)
    where = weight_files(path)
    tied = bool(conf.get("tie_word_embeddings")) and "lm_head.weight" not in where
    shards, rank = fs_init.get_model_parallel_world_size(), fs_init.get_model_parallel_rank()
    params = dict(model.named_parameters())
    with ExitStack() as stack:
        opened: dict[Path, object] = {}
        for name, (shape, dim) in expected_shapes(model).items():
            key = "model.embed_tokens.weight" if tied and name == "output.weight" else hf_name(name)
            if key not in where:
                raise CheckpointError(f"{path}: tensor {key} is missing (model {cfg.name} expects shape {shape} "
                                      f"for {name})")
            if where[key] not in opened:
                opened[where[key]] = stack.enter_context(safe_open(str(where[key]), framework="pt"))
            piece = opened[where[key]].get_slice(key)
            found = tuple(piece.get_shape())
            if found != shape:
                raise shape_error(str(where[key]), key, found, shape, cfg.name)
            param = params[name]
            if dim is None:
                param.copy_(piece[:])
                continue
            lo, hi = rank * shape[dim] // shards, (rank + 1) * shape[dim] // shards
            tensor = piece[lo:hi] if dim == 0 else piece[:, lo:hi]
            if name.endswith(_ROTATED):
                tensor = unpermute_rotary(tensor, cfg.n_heads // shards)
            param.copy_(tensor)
    log.info("loaded %s (%d files) for rank %d of %d", path, len(set(where.values())), rank, shards)
