"""Decode attention that reads each row's own context length from the KV cache.

A decode step gives every row one query. Attending through an additive mask over a shared span (the
`mask` argument of the model's forward) makes every row read the longest row's span, rounded up to the
span bucket; `attend_lens` reads row b's slots [0, kv_lens[b]) only. The lengths stay on the device, so a
call is captured in a CUDA graph once per batch size and replayed at every length.

On a GPU it is, where `split_usable` (Triton, compute capability 8.0 or later, fp16 or bf16, a head size that is a
power of two), energybench's
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

from typing import NamedTuple

import torch
import torch.nn.functional as F

from energybench.model import gemv

FLASH_DTYPES = (torch.float16, torch.bfloat16)


class SplitTile(NamedTuple):
    block_t: int  # cache slots per loop iteration of a program
    num_warps: int
    num_stages: int = 0  # 0: tiles walked one at a time; 2+: the walk software-pipelined, that many loads in flight


# How attend_split lays out its grid: benchmarks/decode_attention.py's tile grid on one H200 (LLaMA-7B's 32 heads of
# 128, rows at 164 slots). In a first run (commit 9a7d260, docs/benchmarks/decode-attention-before.json: 2/4/8 warps,
# blocks of 16-64 slots) 2 warps always won, and the fastest splits brought the grid to 2,048 programs wherever the
# cache had the slots. The current run (commit 9d5bb70, docs/benchmarks/decode-attention.json; c0b200c's gave the same
# within 0.0003 ms), per layer: batch 64 (1 split, 64-slot blocks) 0.049 ms against cuDNN's masked 0.073; batch 16 (4
# splits of 32) 0.022 against 0.030; batch 1 (16 splits of 16) 0.0064 against 0.0129. It found 32/1/2 at batch 64
# (0.0481) and 1 split of 128-slot blocks at batch 16 (0.015) faster still: not taken (docs/engine.md).
TARGET_PROGRAMS = 2048
MAX_SPLITS = 16
NUM_WARPS = 2


# The kernel with each tile's K and V loaded at once (kv_together, `fast_tuned`) over the same tile grid (commits
# c0e1775 and 9d5bb70, docs/benchmarks/decode-attention.json; rows at 164 slots, equal and spread lengths): batch 16
# fastest at 2 splits of 64-slot tiles with 2 warps (0.0159 ms a layer against 0.0217 for the plan above; in 7B's step
# its attention took 0.69 ms against 1.01), batch 64 at one split of 64 with 2 warps (0.0478, the plan above's tile;
# 0.0475 at 16/1/2 within noise). Batch 1 was fastest alone at 2 splits of 128-slot tiles with 4 warps (0.0052 against
# 0.0064), but in 7B's step (profile at 7d07235) its attention took 0.372 ms against 0.321 with the rule's 16 splits
# of 16 (10be8d6): grids of at most SMALL_GRID (batch 1-2 of 32 heads) keep the rule's tiles.
SMALL_GRID = 64
TOGETHER_GRID = 1024  # grids past SMALL_GRID up to this many (row, head) pairs take TOGETHER_SPLITS of TOGETHER_TILE
TOGETHER_SPLITS, TOGETHER_TILE = 2, SplitTile(64, 2)


def split_plan(rows_times_heads: int, slots: int, kv_together: bool = False) -> tuple[int, SplitTile]:
    """(splits, tile) for a grid of `rows_times_heads` (row, head) pairs over a cache of `slots` slots per row: the
    largest power of two of splits (at most MAX_SPLITS) that keeps the grid within TARGET_PROGRAMS and gives each
    split at least one tile of the cache, with tiles of 64 slots at one split, 32 up to four, 16 beyond.
    kv_together (the kernel loading K and V at once): grids past SMALL_GRID up to TOGETHER_GRID (batch 3-32 of 32
    heads) take TOGETHER_SPLITS splits of TOGETHER_TILE; other grids, and a cache too short for those tiles, the rule
    above (past TOGETHER_GRID: one split of 64-slot tiles)."""
    if (kv_together and SMALL_GRID < rows_times_heads <= TOGETHER_GRID
            and TOGETHER_SPLITS * TOGETHER_TILE.block_t <= slots):
        return TOGETHER_SPLITS, TOGETHER_TILE
    splits = 1
    while (splits < MAX_SPLITS and rows_times_heads * splits * 2 <= TARGET_PROGRAMS
           and splits * 2 * block_t_for(splits * 2) <= slots):
        splits *= 2
    return splits, SplitTile(block_t_for(splits), NUM_WARPS)


def block_t_for(splits: int) -> int:
    return 64 if splits == 1 else 32 if splits <= 4 else 16


def flash_usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `attend_lens` runs FlashAttention's kernel for a model on `device` in `dtype`."""
    if device.type != "cuda" or dtype not in FLASH_DTYPES:
        return False
    if not torch.backends.cuda.is_flash_attention_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def split_usable(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether `attend_split` can run on `device` in `dtype` for heads of `head_dim`: where energybench's Triton
    kernels run (model.gemv.usable: a CUDA card of compute capability 8.0+ in fp16/bf16, or a CPU under Triton's
    interpreter for tests), for a head size that is a power of two (the kernel's tiles; LLaMA's 128)."""
    return head_dim > 0 and head_dim & (head_dim - 1) == 0 and gemv.usable(device, dtype)


def attend_lens(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor,
                n_slots: int, kv_together: bool = False) -> torch.Tensor:
    """One query per row: q [B, 1, H, D]; k_cache, v_cache [max_batch, S, H, D] (rows 0..B-1 are the batch's);
    kv_lens [B] int32, row b attends to its slots [0, kv_lens[b]) (at most n_slots). Returns [B, 1, H * D].
    kv_together: where the split kernel runs, its form loading each tile's K and V at once (attend_split)."""
    bsz, seqlen, heads, dim = q.shape
    assert seqlen == 1, "attend_lens is for decode steps (one new position per row)"
    if q.is_cuda:  # the engine takes this path only where split_usable() or flash_usable() (FastEngine checks it)
        if split_usable(q.device, q.dtype, dim):
            return attend_split(q, k_cache, v_cache, kv_lens, kv_together=kv_together)
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
                 splits: int = 0, block_t: int = 0, num_warps: int = 0,
                 kv_together: bool = False, num_stages: int = -1) -> torch.Tensor:
    """attend_lens through the split-KV Triton kernel (model/decode_attention_kernel.py; where split_usable).
    q [B, 1, H, D] (D a power of two); caches [max_batch, S, H, D] with D contiguous; kv_lens [B] int32, each in
    [1, S] (a length past S reads S slots, a length of 0 gives zeros). splits and
    the tile: 0 takes split_plan()'s (benchmarks/decode_attention.py passes its own). kv_together: each tile's K and V
    loaded at once (the kernel's TOGETHER; split_plan(kv_together=True)'s tiles), as `fast_tuned` runs it.
    num_stages: the tile's software pipelining (SplitTile.num_stages; -1 takes the plan's). A torch
    custom op, so torch.compile keeps it as one call and a CUDA graph captures it. Returns [B, 1, H * D]."""
    from energybench.model import decode_attention_kernel

    bsz, seqlen, heads, dim = q.shape
    assert seqlen == 1 and k_cache.shape[2:] == (heads, dim) and k_cache.stride(3) == 1 and v_cache.stride(3) == 1, (
        tuple(q.shape), tuple(k_cache.shape), k_cache.stride())
    planned, tile = split_plan(bsz * heads, k_cache.shape[1], kv_together)
    tile = SplitTile(block_t or tile.block_t, num_warps or tile.num_warps,
                     tile.num_stages if num_stages < 0 else num_stages)
    out = torch.empty((bsz, heads, dim), dtype=q.dtype, device=q.device)
    decode_attention_kernel.launch(q.reshape(bsz, heads, dim).contiguous(), k_cache, v_cache,
                                   kv_lens.contiguous(), out, splits or planned, *tile, pdl=gemv.pdl_on(q.device),
                                   kv_together=kv_together)
    return out.view(bsz, 1, heads * dim)


@attend_split.register_fake
def _attend_split_shape(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, kv_lens: torch.Tensor,
                        splits: int = 0, block_t: int = 0, num_warps: int = 0,
                        kv_together: bool = False, num_stages: int = -1) -> torch.Tensor:
    bsz, _, heads, dim = q.shape
    return q.new_empty((bsz, 1, heads * dim))
