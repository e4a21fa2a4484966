"""The Triton kernel behind `model.gemv`: y = W x for one row x, each program streaming a block of W's rows once.

Imported only where Triton is (model.gemv decides); on a CPU, TRITON_INTERPRET=1 runs it for the tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gemv(x_ptr, w_ptr, y_ptr, N, stride_w,
          K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """Program p: rows [p BLOCK_N, (p + 1) BLOCK_N) of W [N, K] (row stride stride_w) times x [K] -> y [N].
    Products are summed in fp32 across a [BLOCK_N, BLOCK_K] tile and reduced once at the end. K is a
    constant of the compiled kernel (a model has two or three), so the loop's trip count is known."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_w  # [BLOCK_N, 1]
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + cols
        if EVEN_K:
            x = tl.load(x_ptr + k)
            w = tl.load(w_rows + k[None, :], mask=row_ok[:, None], other=0.0, eviction_policy="evict_first")
        else:
            k_ok = k < K
            x = tl.load(x_ptr + k, mask=k_ok, other=0.0)
            w = tl.load(w_rows + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0,
                        eviction_policy="evict_first")
        acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
    y = tl.sum(acc, axis=1)  # [BLOCK_N]
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)


def launch(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, block_n: int, block_k: int,
           num_warps: int, num_stages: int) -> None:
    """out [N] = weight [N, K] @ x [K]; x and out contiguous, weight's rows contiguous."""
    n, k = weight.shape
    grid = (triton.cdiv(n, block_n),)
    _gemv[grid](x, weight, out, n, weight.stride(0), K=k, BLOCK_N=block_n, BLOCK_K=block_k,
                EVEN_K=k % block_k == 0, num_warps=num_warps, num_stages=num_stages)
