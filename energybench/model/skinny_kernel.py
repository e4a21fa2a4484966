"""The Triton GEMM behind `model.skinny`: Y = X W^T for a decode step's few rows (X [M, K] with M <= 64, W [N, K]):
each program streams BLOCK_N rows of W once through the tensor cores, both operands loaded by the Hopper tensor memory
accelerator (TMA: triton.tools.tensor_descriptor; X's rows past M read as zeros). benchmarks/skinny.py weighs it
against cuBLAS and cuBLASLt per shape and tile (docs/engine.md says where it wins and where it loses).

Imported only where Triton is (model.skinny decides); on a CPU, TRITON_INTERPRET=1 runs it for the tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor


@triton.jit
def _skinny(x_desc, w_desc, y_ptr, M, N, stride_y, K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCK_K: tl.constexpr, PDL: tl.constexpr = False):
    n0 = tl.program_id(0) * BLOCK_N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    first = 0
    if PDL:  # launched early: let the next kernel launch, load the first tile of W (no kernel writes weights), and
        # only then wait for the kernel before, whose output X is
        tl.extra.cuda.gdc_launch_dependents()
        w = w_desc.load([n0, 0])
        tl.extra.cuda.gdc_wait()
        acc = tl.dot(x_desc.load([0, 0]), tl.trans(w), acc)
        first = BLOCK_K
    for k0 in range(first, K, BLOCK_K):
        w = w_desc.load([n0, k0])  # [BLOCK_N, BLOCK_K]
        x = x_desc.load([0, k0])  # [BLOCK_M, BLOCK_K]
        acc = tl.dot(x, tl.trans(w), acc)
    m = tl.arange(0, BLOCK_M)
    n = n0 + tl.arange(0, BLOCK_N)
    tl.store(y_ptr + m[:, None] * stride_y + n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(m < M)[:, None] & (n < N)[None, :])


def launch(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, block_n: int, block_k: int, num_warps: int,
           num_stages: int, pdl: bool = False) -> None:
    """out [M, N] = x [M, K] @ weight [N, K].T, all row-contiguous, M <= 64 (one block of rows: at least 16). pdl: a
    programmatic dependent launch whose first tile of W loads before it waits for the kernel before it."""
    rows, (n, k) = x.shape[0], weight.shape
    block_m = max(16, triton.next_power_of_2(rows))
    x_desc = TensorDescriptor.from_tensor(x, [block_m, block_k])
    w_desc = TensorDescriptor.from_tensor(weight, [block_n, block_k])
    _skinny[(triton.cdiv(n, block_n),)](x_desc, w_desc, out, rows, n, out.stride(0), K=k, BLOCK_M=block_m,
                                        BLOCK_N=block_n, BLOCK_K=block_k, PDL=pdl, num_warps=num_warps,
                                        num_stages=num_stages, **({"launch_pdl": True} if pdl else {}))
