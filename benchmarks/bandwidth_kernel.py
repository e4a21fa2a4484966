"""benchmarks/bandwidth.py's Triton read: each program sums BLOCK elements of a buffer into its own output slot."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _block_sum(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < n, other=0.0, eviction_policy="evict_first")
    tl.store(out_ptr + tl.program_id(0), tl.sum(x.to(tl.float32), axis=0))


def triton_sum(x: torch.Tensor, out: torch.Tensor, block: int, num_warps: int) -> None:
    """out[p] = sum of x's elements [p block, (p + 1) block); out holds at least cdiv(x.numel(), block) floats."""
    n = x.numel()
    _block_sum[(triton.cdiv(n, block),)](x, out, n, BLOCK=block, num_warps=num_warps)
