"""LLaMA v1 (RMSNorm, rotary embeddings, SwiGLU, no biases) on fairscale model-parallel layers."""

from __future__ import annotations

import copy
import functools
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from fairscale.nn.model_parallel import initialize as fs_init
from fairscale.nn.model_parallel.layers import ColumnParallelLinear, ParallelEmbedding, RowParallelLinear
from fairscale.nn.model_parallel.mappings import gather_from_model_parallel_region
from torch import nn

from energybench.config import ModelConfig
from energybench.model import skinny as skinny_gemm
from energybench.model.decode_attention import attend_lens
from energybench.model.gemv import gemv as gemv_op


CACHE_ALIGN = 64  # KV cache lengths are multiples of this (fused attention wants aligned masks)


def _keep(x: torch.Tensor) -> torch.Tensor:
    """fairscale init hook that leaves the tensor alone: weights are filled after construction."""
    return x


def _call(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer(x)


def matmul(x: torch.Tensor, weight: torch.Tensor, gemv: bool = False, skinny: bool = False) -> torch.Tensor:
    """x @ weight.T; with `gemv`, an x of one row goes to the Triton kernel of model/gemv.py (batch-1 decode); with
    `skinny`, the others to model/skinny.py's op (its Triton GEMM for 2 to skinny.MAX_ROWS rows, batch 2-16 decode, and
    up to skinny.WIDE_ROWS for the shapes of skinny.WIDE_CONFIGS)."""
    if gemv and one_row(x):
        return gemv_op(x, weight)
    if skinny and skinny_gemm.fits(x):
        return skinny_gemm.skinny(x, weight)
    return F.linear(x, weight)


def fused_linear(layer: ColumnParallelLinear | RowParallelLinear, x: torch.Tensor, gemv: bool = False,
                 skinny: bool = False) -> torch.Tensor:
    """What `layer(x)` computes in inference (no gather_output), without fairscale's autograd wrappers,
    which torch.compile cannot trace: the local matmul, then the sum over ranks for row-parallel layers."""
    y = matmul(x, layer.weight, gemv, skinny)
    if isinstance(layer, RowParallelLinear) and (group := _sharded_group()) is not None:
        dist.all_reduce(y, group=group)  # torch.compile traces it as a functional collective
    return y


def _sharded_group() -> dist.ProcessGroup | None:
    """fairscale's model-parallel group where it has more than one rank, else None."""
    if not dist.is_initialized():
        return None
    group = fs_init.get_model_parallel_group()
    return group if dist.get_world_size(group) > 1 else None


def _row_parallel_gemv(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor,
                       swiglu: bool = False) -> torch.Tensor:
    """residual + x @ weight.T for a row-parallel layer's local weight through model/gemv.py's kernel: the
    model-parallel rank 0 adds the residual to its partial product, then the all-reduce sums the ranks'."""
    group = _sharded_group()
    if group is None:
        return gemv_op(x, weight, swiglu=swiglu, residual=residual)
    y = gemv_op(x, weight, swiglu=swiglu, residual=residual if dist.get_rank(group) == 0 else None)
    dist.all_reduce(y, group=group)
    return y


Pair = tuple[torch.Tensor, torch.Tensor]


def one_row(x: torch.Tensor) -> bool:
    """Whether activations x [..., width] are one row (a batch-1 decode step): with gemv, the fused variant's path
    through model/gemv.py's kernel, the norms and residual adds folded into its matmuls (TransformerBlock._one_row)."""
    return x.numel() == x.shape[-1]


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
    """Rotate pairs of channels (Meta's complex form).  x: [B, S, H, D]; freqs_cis: [B or 1, S, D // 2]"""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # [B, S, H, D/2]
    out = torch.view_as_real(xc * freqs_cis.unsqueeze(2)).flatten(3)
    return out.type_as(x)


def apply_rotary_emb_real(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """The same rotation in real arithmetic, which torch.compile fuses.  freqs: [B or 1, S, D // 2, 2] (cos, sin)"""
    xr = x.float().reshape(*x.shape[:-1], -1, 2)  # [B, S, H, D/2, 2]
    x0, x1 = xr[..., 0], xr[..., 1]
    cos, sin = freqs[..., 0].unsqueeze(2), freqs[..., 1].unsqueeze(2)  # [B, S, 1, D/2]
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).flatten(3)
    return out.type_as(x)


class KVCache(nn.Module):
    """Keys and values of every position seen so far, for this rank's heads."""

    def __init__(self, max_batch: int, max_seq: int, n_local_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        shape = (max_batch, max_seq, n_local_heads, head_dim)  # [B, S, H, D]
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_slots: int,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v [B, S, H, D] at `positions` [B, S] of cache `rows` [B] (None: rows 0..B-1); returns the
        keys and values of slots [0, n_slots) of those rows, [B, H, T, D] (read in place when rows is None)."""
        bsz = k.shape[0]
        index = torch.arange(bsz, device=k.device) if rows is None else rows  # [B] cache rows
        self.k[index.unsqueeze(1), positions] = k
        self.v[index.unsqueeze(1), positions] = v
        if rows is None:
            return self.k[:bsz, :n_slots].transpose(1, 2), self.v[:bsz, :n_slots].transpose(1, 2)
        # scattered rows (continuous batching's prefill): gathered copies
        return self.k[rows, :n_slots].transpose(1, 2), self.v[rows, :n_slots].transpose(1, 2)

    def compact(self, keep: torch.Tensor, span: int) -> None:
        """Move rows `keep` [n] (ascending) to rows 0..n-1, slots [0, span); the right side is gathered
        before anything is written, so a row may move onto one that moves too."""
        n = keep.numel()
        self.k[:n, :span] = self.k[keep, :span]
        self.v[:n, :span] = self.v[keep, :span]


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
        # after pack(): [3 * local dim, dim], wq/wk/wv views of it (a buffer, so .to() moves it with the weights)
        self.register_buffer("wqkv", None, persistent=False)

    def pack(self) -> None:
        """Put wq, wk and wv in one buffer ([q; k; v] rows) and make the three weights views of it: the fused
        path then reads them with one matmul. Same values, no extra memory once done (one layer's copy at
        a time while packing)."""
        if self.wqkv is None:
            self.wqkv = _pack_rows(self.wq, self.wk, self.wv)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        super()._apply(fn, recurse)  # .to() / .half() move the weights and the buffer apart
        if self.wqkv is not None:
            self.wqkv = _pack_rows(self.wq, self.wk, self.wv)  # views again
        return self

    def forward(self, x: torch.Tensor, positions: torch.Tensor, n_slots: int, freqs_cis: torch.Tensor,
                mask: torch.Tensor | None, fused: bool = False, rows: torch.Tensor | None = None,
                kv_lens: torch.Tensor | None = None, gemv: bool = False, kv_together: bool = False,
                skinny: bool = False) -> torch.Tensor:
        """x: [B, S, dim]; positions: [B, S] cache slots written; attends to slots [0, n_slots) through
        the additive mask [B or 1, 1, S, n_slots] (None: every slot is visible). fused=False is Meta's
        arithmetic; fused=True computes the same function with real-valued rotary embeddings (freqs_cis
        then [B, S, D/2, 2]) and one scaled_dot_product_attention kernel reading the cache in place.
        rows: [B] cache rows of the batch's sequences (None: rows 0..B-1, read in place).
        kv_lens: [B] int32 (fused decode, S = 1, rows None): row b attends to its slots [0, kv_lens[b]) instead
        of through `mask` (decode_attention.attend_lens: on GPU a kernel that reads only those slots).
        gemv (fused): one-row matmuls through model/gemv.py's kernel. kv_together (with kv_lens): the decode attention
        kernel that loads each tile's K and V at once (decode_attention.attend_split). skinny (fused): matmuls of more than one
        row (of any row with gemv off) through model/skinny.py's op: its Triton GEMM up to skinny.MAX_ROWS rows (up to
        skinny.WIDE_ROWS for skinny.WIDE_CONFIGS' shapes)."""
        bsz, seqlen, _ = x.shape
        proj = functools.partial(fused_linear, gemv=gemv, skinny=skinny) if fused else _call
        if fused and self.wqkv is not None:  # packed: one matmul for q, k and v
            qkv = matmul(x, self.wqkv, gemv, skinny)
            q, k, v = qkv.view(bsz, seqlen, 3, self.n_local_heads, self.head_dim).unbind(2)
        else:
            q = proj(self.wq, x).view(bsz, seqlen, self.n_local_heads, self.head_dim)
            k = proj(self.wk, x).view(bsz, seqlen, self.n_local_heads, self.head_dim)
            v = proj(self.wv, x).view(bsz, seqlen, self.n_local_heads, self.head_dim)
        if fused:
            return proj(self.wo, self.attend(q, k, v, positions, n_slots, freqs_cis, mask, rows, kv_lens, kv_together))
        q, k = apply_rotary_emb(q, freqs_cis), apply_rotary_emb(k, freqs_cis)
        assert self.cache is not None, "call Transformer.setup_caches() before forward"
        keys, values = self.cache.update(positions, k, v, n_slots, rows)  # [B, H, T, D]
        q = q.transpose(1, 2)  # [B, H, S, D]
        scores = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(self.head_dim)  # [B, H, S, T]
        if mask is not None:
            scores = scores + mask
        probs = F.softmax(scores.float(), dim=-1).type_as(q)
        out = torch.matmul(probs, values).transpose(1, 2).reshape(bsz, seqlen, -1)  # [B, S, H_local * D]
        return self.wo(out)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor, n_slots: int,
               freqs: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor | None = None,
               kv_lens: torch.Tensor | None = None, kv_together: bool = False) -> torch.Tensor:
        """The fused path between the projections: q, k, v [B, S, H, D] rotated (real form, freqs [B, S, D/2, 2]),
        k and v written to the cache, q attending to it in one kernel (see forward). Returns [B, S, H * D], the
        output projection's input."""
        bsz, seqlen = q.shape[:2]
        q, k = apply_rotary_emb_real(q, freqs), apply_rotary_emb_real(k, freqs)
        assert self.cache is not None, "call Transformer.setup_caches() before forward"
        if kv_lens is not None:
            assert rows is None, "kv_lens reads rows 0..B-1 in place"
            self.cache.update(positions, k, v, n_slots)
            return attend_lens(q, self.cache.k, self.cache.v, kv_lens, n_slots, kv_together)
        keys, values = self.cache.update(positions, k, v, n_slots, rows)  # [B, H, T, D]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)  # [B, H, S, D]
        return out.transpose(1, 2).reshape(bsz, seqlen, -1)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_dim
        self.w1 = ColumnParallelLinear(cfg.dim, hidden, bias=False, gather_output=False, init_method=_keep)
        self.w2 = RowParallelLinear(hidden, cfg.dim, bias=False, input_is_parallel=True, init_method=_keep)
        self.w3 = ColumnParallelLinear(cfg.dim, hidden, bias=False, gather_output=False, init_method=_keep)
        self.register_buffer("w13", None, persistent=False)  # after pack(): [2 * local hidden, dim], w1/w3 views

    def pack(self) -> None:
        """w1 and w3 in one buffer, read with one matmul on the fused path (see Attention.pack)."""
        if self.w13 is None:
            self.w13 = _pack_rows(self.w1, self.w3)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        super()._apply(fn, recurse)
        if self.w13 is not None:
            self.w13 = _pack_rows(self.w1, self.w3)
        return self

    def forward(self, x: torch.Tensor, fused: bool = False, gemv: bool = False, skinny: bool = False) -> torch.Tensor:
        proj = functools.partial(fused_linear, gemv=gemv, skinny=skinny) if fused else _call
        if fused and self.w13 is not None:
            if (skinny and skinny_gemm.fits(x) and skinny_gemm.swiglu_covers(*self.w13.shape)
                    and not (gemv and one_row(x))):  # SwiGLU in the Triton GEMM's epilogue
                return proj(self.w2, skinny_gemm.skinny(x, self.w13, swiglu=True))
            gate, up = matmul(x, self.w13, gemv, skinny).chunk(2, dim=-1)
            return proj(self.w2, F.silu(gate) * up)
        return proj(self.w2, F.silu(proj(self.w1, x)) * proj(self.w3, x))


def _pack_rows(*layers: nn.Module) -> torch.Tensor:
    """One tensor holding the layers' weights one after another along dim 0; each layer's weight becomes a view
    of its rows (the old storage is freed)."""
    packed = torch.cat([layer.weight.detach() for layer in layers])
    start = 0
    for layer in layers:
        rows = layer.weight.shape[0]
        layer.weight.data = packed[start:start + rows]
        start += rows
    return packed


class TransformerBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, n_slots: int, freqs_cis: torch.Tensor,
                mask: torch.Tensor | None, fused: bool = False, rows: torch.Tensor | None = None,
                kv_lens: torch.Tensor | None = None, gemv: bool = False, kv_together: bool = False,
                skinny: bool = False, pending: torch.Tensor | None = None) -> torch.Tensor | Pair:
        """The layer: x + attention, then + feed-forward. pending (the fused variant's deferred residual add): the
        layer before's feed-forward output, not yet added to x; this layer adds it first (with its norm, one
        compiled kernel) and returns (h, its own feed-forward output) for the next layer to add in turn."""
        if pending is not None:
            x = x + pending
        elif gemv and one_row(x) and self.attention.wqkv is not None and self.feed_forward.w13 is not None:
            return self._one_row(x, positions, n_slots, freqs_cis, mask, rows, kv_lens, kv_together)
        h = x + self.attention(self.attention_norm(x), positions, n_slots, freqs_cis, mask, fused, rows, kv_lens,
                               gemv, kv_together, skinny)
        out = self.feed_forward(self.ffn_norm(h), fused, gemv, skinny)
        return (h, out) if pending is not None else h + out

    def _one_row(self, x: torch.Tensor, positions: torch.Tensor, n_slots: int, freqs: torch.Tensor,
                 mask: torch.Tensor | None, rows: torch.Tensor | None, kv_lens: torch.Tensor | None,
                 kv_together: bool = False) -> torch.Tensor:
        """The fused layer for one row with packed projections, every matmul through model/gemv.py's kernel with
        the elementwise work folded in: the norms into wqkv's and w13's products, SwiGLU into w2's, the residual
        adds into wo's and w2's. What is left between the matmuls is rotary, the cache write and attention."""
        attn, ffn = self.attention, self.feed_forward
        norm1, norm2 = self.attention_norm, self.ffn_norm
        qkv = gemv_op(x, attn.wqkv, norm1.weight, norm1.eps)
        q, k, v = qkv.view(1, 1, 3, attn.n_local_heads, attn.head_dim).unbind(2)
        h = _row_parallel_gemv(attn.attend(q, k, v, positions, n_slots, freqs, mask, rows, kv_lens, kv_together),
                               attn.wo.weight, x)
        gate_up = gemv_op(h, ffn.w13, norm2.weight, norm2.eps)
        return _row_parallel_gemv(gate_up, ffn.w2.weight, h, swiglu=True)


class Transformer(nn.Module):
    """Parameter names match Meta's consolidated.NN.pth checkpoints.

    As built, the model computes Meta's arithmetic (fairscale layers, complex rotary embeddings). An engine
    that wants the fused variant (real rotary, one attention kernel, optionally compiled layers) takes
    `model.variant(fused=True, compile=...)` once when it is built: a view sharing weights and KV cache.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # embedding split along the hidden dimension, gathered after lookup
        self.tok_embeddings = ParallelEmbedding(cfg.vocab_size, cfg.dim, init_method=_keep)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        # logits split along the vocabulary, gathered so every rank samples the same token
        self.output = ColumnParallelLinear(cfg.dim, cfg.vocab_size, bias=False, gather_output=True, init_method=_keep)
        # buffers, so views made by variant() see the tables setup_caches makes later
        self.register_buffer("freqs_cis", None, persistent=False)  # [2 * max_seq_len, D/2] complex64
        self.register_buffer("freqs_real", None, persistent=False)  # the same as (cos, sin) [2 * max_seq_len, D/2, 2]
        self.fused = False  # the variant: see variant()
        self.gemv = False  # the fused variant's one-row matmuls through model/gemv.py's kernel
        self.kv_together = False  # the fused variant's decode attention loading K and V at once (attend_split)
        self.skinny = False  # the fused variant's matmuls through model/skinny.py's op (its Triton GEMM: 2-16 rows,
        # 17-64 on WIDE_CONFIGS' shapes)
        self.defer_residual = False  # the fused variant's last residual add of a layer made in the next layer's
        # first kernel (TransformerBlock.forward's pending)
        self.run_layers: list[nn.Module] | None = None  # compiled copies of self.layers (None: the layers)

    def variant(self, fused: bool, compile: bool = False, gemv: bool = False, kv_together: bool = False,
                skinny: bool = False, defer_residual: bool = False) -> Transformer:
        """This model computed as `fused` says, its layers torch.compiled when `compile`; shares weights and
        KV cache with `self` (a shallow view: nothing is copied). fused=True computes the same function as
        Meta's arithmetic with real-valued rotary embeddings and scaled_dot_product_attention; with `gemv`
        (fused only; where model.gemv.usable) its one-row matmuls run the Triton kernel of model/gemv.py; with
        `kv_together` (fused only) its decode attention over kv_lens loads each tile's K and V at once
        (decode_attention.attend_split); with `skinny` (fused only; where model.skinny.usable) its matmuls of 2 to
        skinny.MAX_ROWS rows (to skinny.WIDE_ROWS for the shapes of skinny.WIDE_CONFIGS, w1/w3's with SwiGLU in the
        kernel's epilogue) run the Triton GEMM of model/skinny.py; with `defer_residual` (fused only) each layer's last
        residual add is made by the next layer, in its first kernel with its norm (TransformerBlock.forward's pending;
        not in a batch-1 step through `gemv`, whose layer folds its residual adds into its matmuls)."""
        assert fused or not (gemv or kv_together or skinny or defer_residual), \
            "gemv, kv_together, skinny, defer_residual: choices of the fused variant"
        view = copy.copy(self)  # own __dict__, the same parameter, buffer and module dicts
        view.fused = fused
        view.gemv = gemv
        view.kv_together = kv_together
        view.skinny = skinny
        view.defer_residual = defer_residual
        view.run_layers = [torch.compile(layer, dynamic=True) for layer in self.layers] if compile else None
        return view

    def pack_projections(self) -> None:
        """Pack every layer's wq/wk/wv and w1/w3 into one buffer each (the fused path then makes two matmuls
        where it made five). Meta's path and checkpoints see the same weights; idempotent."""
        for layer in self.layers:
            layer.attention.pack()
            layer.feed_forward.pack()

    @property
    def packed(self) -> bool:
        return self.layers[0].attention.wqkv is not None

    def setup_caches(self, max_batch: int, max_seq: int) -> None:
        """Allocate the KV cache for `max_batch` sequences of at least `max_seq` positions on the weights'
        device. The length is rounded up to a multiple of CACHE_ALIGN so fused attention kernels can read
        any aligned prefix of it in place."""
        weight = self.output.weight
        max_seq = -(-max_seq // CACHE_ALIGN) * CACHE_ALIGN
        for layer in self.layers:
            attn = layer.attention
            attn.cache = None  # free the old cache before allocating the new one
            attn.cache = KVCache(max_batch, max_seq, attn.n_local_heads, attn.head_dim, weight.dtype, weight.device)
        self.freqs_cis = precompute_freqs_cis(self.cfg.head_dim, max(self.cfg.max_seq_len, max_seq) * 2,
                                              self.cfg.rope_theta, weight.device)
        self.freqs_real = torch.view_as_real(self.freqs_cis).contiguous()

    def compact_caches(self, keep: torch.Tensor, span: int) -> None:
        """Move the KV cache rows `keep` [n] (ascending) to rows 0..n-1, slots [0, span), in every layer."""
        for layer in self.layers:
            layer.attention.cache.compact(keep, span)

    @property
    def max_batch(self) -> int:
        cache = self.layers[0].attention.cache
        return 0 if cache is None else cache.k.shape[0]

    @property
    def max_seq(self) -> int:
        """Positions the KV cache holds per sequence (0 before setup_caches)."""
        cache = self.layers[0].attention.cache
        return 0 if cache is None else cache.k.shape[1]

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, n_slots: int,
                mask: torch.Tensor | None = None, last_only: bool = True, *,
                logits_at: torch.Tensor | None = None, rows: torch.Tensor | None = None,
                kv_lens: torch.Tensor | None = None) -> torch.Tensor:
        """tokens, positions: [B, S]; attends to cache slots [0, n_slots) through the additive mask
        [B or 1, 1, S, n_slots] (None: all of them). Returns float32 logits [B, vocab] of the last
        position (or of position logits_at[b] of row b), or [B, S, vocab] with last_only=False.
        rows, kv_lens: see Attention.forward; the arithmetic is this model's variant (see variant())."""
        fused = self.fused
        assert kv_lens is None or fused, "kv_lens needs the fused variant (model.variant(fused=True))"
        assert self.freqs_cis is not None and self.freqs_real is not None, "call setup_caches() before forward"
        assert tokens.shape[0] <= self.max_batch, (tokens.shape[0], self.max_batch)
        h = self.tok_embeddings(tokens)  # [B, S, dim]
        freqs = (self.freqs_real if fused else self.freqs_cis)[positions]  # [B, S, D/2] (complex) or [.., 2]
        args = (positions, n_slots, freqs, mask, fused, rows, kv_lens, self.gemv, self.kv_together, self.skinny)
        layers = self.layers if self.run_layers is None else self.run_layers
        if self.defer_residual and not (self.gemv and one_row(h)):
            # each layer's last residual add deferred into the next layer's first kernel (with its norm; compiled
            # layers cannot fuse across each other): one elementwise kernel a layer fewer. Zeros for the first, so
            # every layer is the same compiled code.
            pending = torch.zeros_like(h)
            for layer in layers:
                h, pending = layer(h, *args, pending=pending)
            h = h + pending
        else:
            for layer in layers:
                h = layer(h, *args)
        if logits_at is not None:
            h = h[torch.arange(h.shape[0], device=h.device), logits_at]  # [B, dim]
        elif last_only:
            h = h[:, -1, :]
        if self.gemv and one_row(h):  # the norm and the output projection's local matmul in one
            # kernel, then its logits gathered as fairscale's layer does
            logits = gemv_op(h, self.output.weight, self.norm.weight, self.norm.eps)
            return gather_from_model_parallel_region(logits).float()
        if self.skinny:  # the output projection's local matmul through model/skinny.py's op, as the layers' are
            logits = matmul(self.norm(h), self.output.weight, skinny=True)
            return gather_from_model_parallel_region(logits).float()
        return self.output(self.norm(h)).float()
