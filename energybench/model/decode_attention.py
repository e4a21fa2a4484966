"""Decode attention that reads each row's own context length from the KV cache.

A decode step gives every row one query. Attending through an additive mask over a shared span (the
`mask` argument of the model's forward) makes every row read the longest row's span, rounded up to the
span bucket; `attend_lens` reads row b's slots [0, kv_lens[b]) only. The lengths stay on the device, so a
call is captured in a CUDA graph once per batch size and replayed at every length.

On a GPU it is, where `split_usable` (Triton, compute capability 8.0 or later, fp16 or bf16), energybench's
split-KV Triton kernel (`attend_split`, model/decode_attention_kernel.py): each (row, head) spreads its slots
over `splits` programs and a second kernel combines them, so batch 1 keeps the card busy and batch 64 reads each
row's own length. Otherwise, where `flash_usable` (FlashAttention-2 in PyTorch, compute capability 8.0 or later,
fp16 or bf16), one `aten._flash_attention_forward` call in its variable-length form (`attend_flash`): the cache
rows [B, S, H, D] seen as [B * S, H, D] with sequence b starting at b * S, and `seqused_k` = kv_lens. On an H200
the split kernel is the faster (docs/engine.md: benchmarks/decode_attention.py). Elsewhere (CPU; tests) it is
the same function as one `scaled_dot_product_attention` over slots [0, n_slots) with the slots at or past
kv_lens masked.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

FLASH_DTYPES = (torch.float16, torch.bfloat16)


class SplitTile(NamedTuple):
    block_t: int  # cache slots per loop iteration of a program
    num_warps: int
    num_stages: int


SPLIT_TILE = SplitTile(block_t=32, num_warps=4, num_stages=2)
# programs per (row, head): enough for the card at small batches; a row's slots are split evenly among them
TARGET_PROGRAMS = 1024
MAX_SPLITS = 16


def flash_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `attend_lens` runs FlashAttention's kernel for a model on `device` in `dtype`."""
    if device.type != "cuda" or dtype not in FLASH_DTYPES:
        return False
    if not torch.backends.cuda.is_flash_attention_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


@functools.cache
def _triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def split_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `attend_split` can run on `device` in `dtype`: a CUDA card of compute capability 8.0+ in fp16/bf16
    with Triton, or, for tests, a CPU under Triton's interpreter (TRITON_INTERPRET=1; float32 too)."""
    if not _triton():
        return False
    if device.type == "cpu":
        return os.environ.get("TRITON_INTERPRET") == "1" and dtype in (*FLASH_DTYPES, torch.float32)
    return device.type == "cuda" and dtype in FLASH_DTYPES and torch.cuda.get_device_capability(device) >= (8, 0)


def splits_for(rows_times_heads: int, slots: int, block_t: int = SPLIT_TILE.block_t) -> int:
    """Programs per (row, head): the power of two that brings the grid to about TARGET_PROGRAMS, at most
    MAX_SPLITS and no more than the cache's slots fill with block_t each (7B: 16 at batch 1, 2 at 16, 1 at 64)."""
    splits = 1
    while (splits < MAX_SPLITS and rows_times_heads * splits * 2 <= TARGET_PROGRAMS
           and splits * 2 * block_t <= slots):
        splits *= 2
    return splits


def attend_lens(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor,
                n_slots: int) -> torch.Tensor:
    """One query per row: q [B, 1, H, D]; k_cache, v_cache [max_batch, S, H, D] (rows 0..B-1 are the batch's);
    kv_lens [B] int32, row b attends to its slots [0, kv_lens[b]) (at most n_slots). Returns [B, 1, H * D]."""
    bsz, seqlen, heads, dim = q.shape
    assert seqlen == 1, "attend_lens is for decode steps (one new position per row)"
    if q.is_cuda:  # the engine takes this path only where split_usable() or flash_usable() (FastEngine checks it)
        if split_usable(q.device, q.dtype):
            return attend_split(q, k_cache, v_cache, kv_lens)
        return attend_flash(q, k_cache, v_cache, kv_lens)
    visible = torch.arange(n_slots, device=q.device).view(1, 1, 1, n_slots) < kv_lens.view(bsz, 1, 1, 1)
    mask = torch.zeros(visible.shape, dtype=q.dtype, device=q.device).masked_fill_(~visible, float("-inf"))
    keys = k_cache[:bsz, :n_slots].transpose(1, 2)  # [B, H, T, D]
    values = v_cache[:bsz, :n_slots].transpose(1, 2)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask)  # [B, H, 1, D]
    return out.transpose(1, 2).reshape(bsz, 1, heads * dim)


def attend_flash(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor) -> torch.Tensor:
    """attend_lens through FlashAttention-2's variable-length kernel (where flash_usable)."""
    bsz, _, heads, dim = q.shape
    slots = k_cache.shape[1]
    starts = torch.arange(bsz + 1, device=q.device, dtype=torch.int32)  # query b is row b
    out = torch.ops.aten._flash_attention_forward(
        q.reshape(bsz, heads, dim),
        k_cache[:bsz].view(bsz * slots, heads, dim), v_cache[:bsz].view(bsz * slots, heads, dim),
        starts, starts * slots, 1, slots, 0.0, False, False, seqused_k=kv_lens)[0]  # [B, H, D]
    return out.view(bsz, 1, heads * dim)


@torch.library.custom_op("energybench::decode_attention", mutates_args=())
def attend_split(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor,
                 splits: int = 0, block_t: int = 0, num_warps: int = 0, num_stages: int = 0) -> torch.Tensor:
    """attend_lens through the split-KV Triton kernel (model/decode_attention_kernel.py; where split_usable).
    q [B, 1, H, D]; caches [max_batch, S, H, D] with D contiguous; kv_lens [B] int32, each in [1, S]. splits and
    the tile: 0 takes splits_for() and SPLIT_TILE (benchmarks/decode_attention.py passes its own). A torch
    custom op, so torch.compile keeps it as one call and a CUDA graph captures it. Returns [B, 1, H * D]."""
    from energybench.model import decode_attention_kernel

    bsz, seqlen, heads, dim = q.shape
    assert seqlen == 1 and k_cache.shape[2:] == (heads, dim) and k_cache.stride(3) == 1 and v_cache.stride(3) == 1, (
        tuple(q.shape), tuple(k_cache.shape), k_cache.stride())
    tile = SplitTile(block_t or SPLIT_TILE.block_t, num_warps or SPLIT_TILE.num_warps,
                     num_stages or SPLIT_TILE.num_stages)
    out = torch.empty((bsz, heads, dim), dtype=q.dtype, device=q.device)
    decode_attention_kernel.launch(q.reshape(bsz, heads, dim).contiguous(), k_cache, v_cache,
                                   kv_lens.contiguous(), out,
                                   splits or splits_for(bsz * heads, k_cache.shape[1], tile.block_t), *tile)
    return out.view(bsz, 1, heads * dim)


@attend_split.register_fake
def _attend_split_shape(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor,
                        splits: int = 0, block_t: int = 0, num_warps: int = 0, num_stages: int = 0) -> torch.Tensor:
    bsz, _, heads, dim = q.shape
    return q.new_empty((bsz, 1, heads * dim))
