"""LLaMA v1 (RMSNorm, rotary embeddings, SwiGLU, no biases) on fairscale model-parallel layers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fairscale.nn.model_parallel import initialize as fs_init
from fairscale.nn.model_parallel.layers import ColumnParallelLinear, ParallelEmbedding, RowParallelLinear
from torch import nn

from energybench.config import ModelConfig


def _keep(x: torch.Tensor) -> torch.Tensor:
    """fairscale init hook that leaves the tensor alone: weights are filled after construction."""
    return x


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def precompute_freqs_cis(head_dim: int, end: int, theta: float, device: torch.device) -> torch.Tensor:
    """Complex rotations e^{i t w_k} for positions t < end.  # [end, head_dim // 2] complex64"""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(end, device=device, dtype=torch.float32)
    angles = torch.outer(t, freqs)
    return torch.polar(torch.ones_like(angles), angles)


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels.  x: [B, S, H, D]; freqs_cis: [B or 1, S, D // 2]"""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # [B, S, H, D/2]
    out = torch.view_as_real(xc * freqs_cis.unsqueeze(2)).flatten(3)
    return out.type_as(x)


class KVCache(nn.Module):
    """Keys and values of every position seen so far, for this rank's heads."""

    def __init__(self, max_batch: int, max_seq: int, n_local_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        shape = (max_batch, max_seq, n_local_heads, head_dim)  # [B, S, H, D]
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_local_heads = cfg.n_heads // fs_init.get_model_parallel_world_size()
        self.head_dim = cfg.head_dim
        # q, k, v: each rank computes its own heads, no gather
        self.wq = ColumnParallelLinear(cfg.dim, cfg.dim, bias=False, gather_output=False, init_method=_keep)
        self.wk = ColumnParallelLinear(cfg.dim, cfg.dim, bias=False, gather_output=False, init_method=_keep)
        self.wv = ColumnParallelLinear(cfg.dim, cfg.dim, bias=False, gather_output=False, init_method=_keep)
        # output projection: takes this rank's heads, all-reduces the partial sums
        self.wo = RowParallelLinear(cfg.dim, cfg.dim, bias=False, input_is_parallel=True, init_method=_keep)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, positions: torch.Tensor, n_slots: int, freqs_cis: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, S, dim]; positions: [B, S] cache slots written; attends to slots [0, n_slots) through
        the additive mask [B or 1, 1, S, n_slots] (None: every slot is visible)."""
        bsz, seqlen, _ = x.shape
        q = self.wq(x).view(bsz, seqlen, self.n_local_heads, self.head_dim)
        k = self.wk(x).view(bsz, seqlen, self.n_local_heads, self.head_dim)
        v = self.wv(x).view(bsz, seqlen, self.n_local_heads, self.head_dim)
        q, k = apply_rotary_emb(q, freqs_cis), apply_rotary_emb(k, freqs_cis)
        assert self.cache is not None, "call Transformer.setup_caches() before forward"
        rows = torch.arange(bsz, device=x.device).unsqueeze(1)  # [B, 1]
        self.cache.k[rows, positions] = k
        self.cache.v[rows, positions] = v
        keys = self.cache.k[:bsz, :n_slots].transpose(1, 2)  # [B, H, T, D]
        values = self.cache.v[:bsz, :n_slots].transpose(1, 2)
        q = q.transpose(1, 2)  # [B, H, S, D]
        scores = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(self.head_dim)  # [B, H, S, T]
        if mask is not None:
            scores = scores + mask
        probs = F.softmax(scores.float(), dim=-1).type_as(q)
        out = torch.matmul(probs, values).transpose(1, 2).reshape(bsz, seqlen, -1)  # [B, S, H_local * D]
        return self.wo(out)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_dim
        self.w1 = ColumnParallelLinear(cfg.dim, hidden, bias=False, gather_output=False, init_method=_keep)
        self.w2 = RowParallelLinear(hidden, cfg.dim, bias=False, input_is_parallel=True, init_method=_keep)
        self.w3 = ColumnParallelLinear(cfg.dim, hidden, bias=False, gather_output=False, init_method=_keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, n_slots: int, freqs_cis: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), positions, n_slots, freqs_cis, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Parameter names match Meta's consolidated.NN.pth checkpoints."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # embedding split along the hidden dimension, gathered after lookup
        self.tok_embeddings = ParallelEmbedding(cfg.vocab_size, cfg.dim, init_method=_keep)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # logits split along the vocabulary, gathered so every rank samples the same token
        self.output = ColumnParallelLinear(cfg.dim, cfg.vocab_size, bias=False, gather_output=True, init_method=_keep)
        self.freqs_cis: torch.Tensor | None = None

    def setup_caches(self, max_batch: int, max_seq: int) -> None:
        """Allocate the KV cache for `max_batch` sequences of `max_seq` positions on the weights' device."""
        weight = self.output.weight
        for layer in self.layers:
            attn = layer.attention
            attn.cache = KVCache(max_batch, max_seq, attn.n_local_heads, attn.head_dim, weight.dtype, weight.device)
        self.freqs_cis = precompute_freqs_cis(self.cfg.head_dim, self.cfg.max_seq_len * 2,
                                              self.cfg.rope_theta, weight.device)

    @property
    def max_batch(self) -> int:
        cache = self.layers[0].attention.cache
        return 0 if cache is None else cache.k.shape[0]

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, n_slots: int,
                mask: torch.Tensor | None = None, last_only: bool = True) -> torch.Tensor:
        """tokens, positions: [B, S]; attends to cache slots [0, n_slots) through the additive mask
        [B or 1, 1, S, n_slots] (None: all of them). Returns float32 logits [B, vocab] of the last
        position, or [B, S, vocab] with last_only=False."""
        assert self.freqs_cis is not None, "call setup_caches() before forward"
        assert tokens.shape[0] <= self.max_batch, (tokens.shape[0], self.max_batch)
        h = self.tok_embeddings(tokens)  # [B, S, dim]
        freqs_cis = self.freqs_cis[positions]  # [B, S, D/2]
        for layer in self.layers:
            h = layer(h, positions, n_slots, freqs_cis, mask)
        h = self.norm(h)
        if last_only:
            h = h[:, -1, :]
        return self.output(h).float()
