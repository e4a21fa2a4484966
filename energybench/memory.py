"""Pre-flight memory arithmetic: does a point's model and KV cache fit the GPUs it is sent to?"""

from __future__ import annotations

import os
from dataclasses import dataclass

from energybench.config import ClusterConfig, ModelConfig, PointConfig
from energybench.device.cards import card_for_type
from energybench.results.metrics import DTYPE_BYTES, kv_bytes_per_token

GIB = 2**30

# Share of a GPU's memory the weights and KV cache may take: the rest holds the CUDA context,
# activations of the widest prefill, sampling buffers and allocator slack.
USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class MemoryNeed:
    weights_bytes: int  # all parameters of the model, every shard together
    kv_cache_bytes: int  # K and V of every layer for batch x sequence positions, every shard together
    seq_len: int  # cache positions per sequence: longest prompt + max_tokens, at most max_seq_len

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes

    def per_gpu_bytes(self, shards: int) -> float:
        """Model-parallel shards split weights and cache evenly (heads, FFN columns, vocabulary)."""
        return self.total_bytes / shards


def param_count(m: ModelConfig) -> int:
    """Parameters of a LLaMA of shape `m`: 7b -> 6.74e9, 13b -> 13.0e9, 65b -> 65.3e9."""
    attention = 4 * m.dim * m.dim  # wq, wk, wv, wo
    ffn = 3 * m.dim * m.hidden_dim  # w1, w2, w3 (SwiGLU)
    norms = 2 * m.dim
    embeddings = 2 * m.vocab_size * m.dim  # tok_embeddings and output, untied
    return m.n_layers * (attention + ffn + norms) + m.dim + embeddings


def dtype_bytes(dtype: str, on_cpu: bool = False) -> int:
    """Bytes per element of `dtype` (auto resolves to float16 on a GPU, float32 on the CPU)."""
    return DTYPE_BYTES[("float32" if on_cpu else "float16") if dtype == "auto" else dtype]


def longest_prompt_tokens(cfg: PointConfig) -> int:
    """Longest prompt of the point's dataset (LLaMA tokens, measured into data/lengths.json), at most
    the room the context window leaves beside max_tokens (longer prompts are cut to it)."""
    from energybench.data.synthetic import length_table

    like = cfg.dataset.like if cfg.dataset.name == "synthetic" else cfg.dataset.name
    room = cfg.model.max_seq_len - cfg.max_tokens
    try:
        longest = int(length_table(like or "alpaca")["prompt_max"])
    except (ValueError, KeyError):
        longest = room
    return min(longest, room)


def memory_need(cfg: PointConfig, on_cpu: bool = False) -> MemoryNeed:
    """Bytes the point's weights and KV cache take on the GPUs (or in host memory), all shards together."""
    elem = dtype_bytes(cfg.dtype, on_cpu)
    seq_len = min(cfg.model.max_seq_len, longest_prompt_tokens(cfg) + cfg.max_tokens)
    kv = cfg.batch * seq_len * kv_bytes_per_token(cfg.model.dim, cfg.model.n_layers, elem)
    return MemoryNeed(param_count(cfg.model) * elem, kv, seq_len)


def gpu_memory_gib(cluster: ClusterConfig) -> float | None:
    """Memory per GPU, GiB: cluster.gpu_memory_gb if set, else that of the card cluster.gpu_type names in the card
    table (energybench.device.cards, site cards included), else None."""
    if cluster.gpu_memory_gb is not None:
        return cluster.gpu_memory_gb
    card = card_for_type(cluster.gpu_type)
    return card.memory_gb if card is not None else None


def memory_problem(cfg: PointConfig, memory_gib: float | None) -> str | None:
    """Why the point cannot fit `shards` GPUs of `memory_gib` each, or None (also when unknown)."""
    if memory_gib is None or cfg.device == "cpu":
        return None
    need = memory_need(cfg)
    budget = USABLE_FRACTION * memory_gib * GIB
    if need.per_gpu_bytes(cfg.shards) <= budget:
        return None
    gpu = cfg.cluster.gpu_type or "GPU"
    fitting = [s for s in cfg.model.valid_shards() if need.per_gpu_bytes(s) <= budget]
    fix = f"use shards={fitting[0]} or more" if fitting else "no shard count fits; use a smaller batch"
    return (f"model {cfg.model.name} needs {need.weights_bytes / GIB:.1f} GiB of weights + "
            f"{need.kv_cache_bytes / GIB:.1f} GiB of KV cache (batch {cfg.batch} x {need.seq_len} positions) = "
            f"{need.per_gpu_bytes(cfg.shards) / GIB:.1f} GiB per GPU at shards={cfg.shards}, more than "
            f"{USABLE_FRACTION:.0%} of the {memory_gib:g} GiB of a {gpu}; {fix}")


def host_memory_gib() -> float | None:
    """This machine's memory (or the cgroup's limit, if lower), GiB; None where unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file).read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total / GIB


def host_memory_problem(cfg: PointConfig, memory_gib: float | None = None) -> str | None:
    """Why a point run on this machine's CPU (every shard in its memory) cannot fit it, or None."""
    memory_gib = host_memory_gib() if memory_gib is None else memory_gib
    if memory_gib is None:
        return None
    need = memory_need(cfg, on_cpu=True)
    if need.total_bytes <= USABLE_FRACTION * memory_gib * GIB:
        return None
    dtype = "float32" if cfg.dtype == "auto" else cfg.dtype
    return (f"model {cfg.model.name} in {dtype} on the CPU needs {need.weights_bytes / GIB:.1f} GiB of weights + "
            f"{need.kv_cache_bytes / GIB:.1f} GiB of KV cache, more than {USABLE_FRACTION:.0%} of this machine's "
            f"{memory_gib:.1f} GiB of memory; use a smaller model (model=tiny) or run it on GPUs")
