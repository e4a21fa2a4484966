"""The Triton GEMM behind `model.skinny`: Y = X W^T for a decode step's few rows (X [M, K] with M <= 64, W [N, K]):
each program streams BLOCK_N rows of W once through the tensor cores, both operands loaded by the Hopper tensor memory
accelerator (TMA: triton.tools.tensor_descriptor; X's rows past M read as zeros). benchmarks/skinny.py weighs it
against cuBLAS and cuBLASLt per shape and tile (docs/engine.md says where it wins and where it loses).

Split-K (split_k > 1): the columns of K are split over split_k programs per block of W's rows, so a narrow weight
(4096 rows: 128 blocks of 32 on an H200's 132 SMs) still has several programs per SM streaming it. Each program
writes its fp32 partial product to a scratch buffer and counts itself in on the block's counter; the last of them
sums the split_k partials in split order (so the result does not depend on which program finished last), writes Y
and sets the counter back to zero for the next call (and the next replay of a CUDA graph).

SwiGLU (swiglu=True, weight LLaMA's packed [w1; w3]): each program streams a block of w1's rows and the same block of
w3's, and writes silu(gate) * up for its columns, so the step needs no elementwise kernel between w13's product and
w2's.

Imported only where Triton is (model.skinny decides); on a CPU, TRITON_INTERPRET=1 runs it for the tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

MAX_BLOCKS = 65536  # blocks of W's rows a split-K call may have: the length of each device's counter buffer
_counters: dict[torch.device, torch.Tensor] = {}  # device -> int32 [MAX_BLOCKS] of zeros between calls


@triton.jit
def _skinny(x_desc, w_desc, y_ptr, part_ptr, count_ptr, M, N, stride_y, K: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr = False, SPLIT_K: tl.constexpr = 1,
            CHUNK_K: tl.constexpr = 0, SWIGLU: tl.constexpr = False):
    block = tl.program_id(0)
    n0 = block * BLOCK_N
    k_start = 0
    k_end = K
    if SPLIT_K > 1:  # this program's columns: [split * CHUNK_K, (split + 1) * CHUNK_K) of K
        k_start = tl.program_id(1) * CHUNK_K
        k_end = tl.minimum(k_start + CHUNK_K, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # SWIGLU: the up rows' product (W's rows N + n)
    first = k_start
    if PDL:  # launched early: let the next kernel launch, load the first tile of W (no kernel writes weights), and
        # only then wait for the kernel before, whose output X is
        tl.extra.cuda.gdc_launch_dependents()
        w = w_desc.load([n0, k_start])
        if SWIGLU:
            w_up = w_desc.load([N + n0, k_start])
        tl.extra.cuda.gdc_wait()
        x = x_desc.load([0, k_start])
        acc = tl.dot(x, tl.trans(w), acc)
        if SWIGLU:
            acc_up = tl.dot(x, tl.trans(w_up), acc_up)
        first = k_start + BLOCK_K
    for k0 in range(first, k_end, BLOCK_K):
        w = w_desc.load([n0, k0])  # [BLOCK_N, BLOCK_K]
        x = x_desc.load([0, k0])  # [BLOCK_M, BLOCK_K]
        acc = tl.dot(x, tl.trans(w), acc)
        if SWIGLU:
            acc_up = tl.dot(x, tl.trans(w_desc.load([N + n0, k0])), acc_up)
    if SWIGLU:  # silu(gate) * up, in fp32 from the unrounded sums
        acc = acc * tl.sigmoid(acc) * acc_up
    m = tl.arange(0, BLOCK_M)
    n = n0 + tl.arange(0, BLOCK_N)
    mask = (m < M)[:, None] & (n < N)[None, :]
    if SPLIT_K == 1:
        tl.store(y_ptr + m[:, None] * stride_y + n[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        part = part_ptr + m[:, None] * N + n[None, :]  # this split's partial: scratch [SPLIT_K, M, N] fp32
        tl.store(part + tl.program_id(1) * M * N, acc, mask=mask)
        tl.debug_barrier()  # every thread's partial stored before the count releases it
        arrived = tl.atomic_add(count_ptr + block, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:  # the last split of this block: sum the partials in split order
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in tl.static_range(SPLIT_K):
                total += tl.load(part + s * M * N, mask=mask, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + m[:, None] * stride_y + n[None, :], total.to(y_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(count_ptr + block, 0, sem="relaxed", scope="gpu")


def counters(device: torch.device) -> torch.Tensor:
    """The device's split-K counters: zeros, allocated by the first split-K call on it (a warm-up call, before any
    CUDA graph captures one), left at zero by every call."""
    if device not in _counters:
        _counters[device] = torch.zeros(MAX_BLOCKS, dtype=torch.int32, device=device)
    return _counters[device]


def launch(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, block_n: int, block_k: int, num_warps: int,
           num_stages: int, split_k: int = 1, pdl: bool = False, swiglu: bool = False) -> None:
    """out [M, N] = x [M, K] @ weight [N, K].T, all row-contiguous, M <= 64 (one block of rows: at least 16). split_k:
    the columns of K over that many programs per block of W's rows, the partial products summed in fp32 by the last
    (1: none; more programs than blocks of BLOCK_K columns leave the extra ones none). pdl: a programmatic dependent
    launch whose first tile of W loads before it waits for the kernel before it. swiglu: weight is [gate; up] (2 N
    rows: LLaMA's packed w1 and w3) and out [M, N] = silu(x @ gate.T) * (x @ up.T), each program streaming a block of
    gate's rows and the same block of up's (split_k 1 only)."""
    rows, (n, k) = x.shape[0], weight.shape
    if swiglu:
        assert split_k == 1 and n % 2 == 0, (split_k, n)
        n //= 2
    block_m = max(16, triton.next_power_of_2(rows))
    x_desc = TensorDescriptor.from_tensor(x, [block_m, block_k])
    w_desc = TensorDescriptor.from_tensor(weight, [block_n, block_k])
    blocks = triton.cdiv(n, block_n)
    chunk_k = triton.cdiv(triton.cdiv(k, block_k), split_k) * block_k if split_k > 1 else 0
    if split_k > 1:
        assert blocks <= MAX_BLOCKS, (n, block_n)
        parts = torch.empty((split_k, rows, n), dtype=torch.float32, device=x.device)
        count = counters(x.device)
    else:
        parts = count = out  # not read
    _skinny[(blocks, split_k)](x_desc, w_desc, out, parts, count, rows, n, out.stride(0), K=k, BLOCK_M=block_m,
                               BLOCK_N=block_n, BLOCK_K=block_k, PDL=pdl, SPLIT_K=split_k, CHUNK_K=chunk_k,
                               SWIGLU=swiglu,
                               num_warps=num_warps, num_stages=num_stages,
                               **({"launch_pdl": True} if pdl else {}))
