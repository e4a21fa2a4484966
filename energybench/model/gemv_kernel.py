"""The Triton kernel behind `model.gemv`: y = W x for one row x, each program streaming a block of W's rows once,
optionally with the decode step's elementwise work around the product folded in (so a batch-1 step launches no
kernel of its own for it):
  norm      x is the raw residual stream: y = rsqrt(mean(x^2) + eps) * (W (x * g)), RMSNorm's output times W
            without writing it (g the norm's weight; the scalar factors out of the product);
  swiglu    x holds [gate; up] (2K values): y = W (silu(gate) * up), the feed-forward's activation on the fly;
  residual  y += r (r [N]): the residual stream's add after the output projections.

Imported only where Triton is (model.gemv decides); on a CPU, TRITON_INTERPRET=1 runs it for the tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _vector(ptr, k, K: tl.constexpr, EVEN_K: tl.constexpr):
    """Entries k (a block of column indices) of a length-K vector, as fp32 (0 past K)."""
    if EVEN_K:
        return tl.load(ptr + k).to(tl.float32)
    return tl.load(ptr + k, mask=k < K, other=0.0).to(tl.float32)


@triton.jit
def _tile(acc, squares, w, x_ptr, g_ptr, k, K: tl.constexpr, EVEN_K: tl.constexpr, NORM: tl.constexpr,
          SWIGLU: tl.constexpr):
    """One [BLOCK_N, BLOCK_K] tile of W (loaded) times the matching block k of x, into acc (and x's squares)."""
    x = _vector(x_ptr, k, K, EVEN_K)
    if SWIGLU:  # x is the gate; the up projection follows it
        x = x * tl.sigmoid(x) * _vector(x_ptr + K, k, K, EVEN_K)
    if NORM:
        squares += x * x
        x = x * _vector(g_ptr, k, K, EVEN_K)
    acc += w.to(tl.float32) * x[None, :]
    return acc, squares


@triton.jit
def _w_tile(w_rows, row_ok, k, K: tl.constexpr, EVEN_K: tl.constexpr):
    if EVEN_K:
        return tl.load(w_rows + k[None, :], mask=row_ok[:, None], other=0.0, eviction_policy="evict_first")
    return tl.load(w_rows + k[None, :], mask=row_ok[:, None] & (k < K)[None, :], other=0.0,
                   eviction_policy="evict_first")


@triton.jit
def _gemv(x_ptr, w_ptr, y_ptr, g_ptr, r_ptr, N, stride_w, eps,
          K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
          NORM: tl.constexpr, SWIGLU: tl.constexpr, RESIDUAL: tl.constexpr, PDL: tl.constexpr):
    """Program p: rows [p BLOCK_N, (p + 1) BLOCK_N) of W [N, K] (row stride stride_w) times x [K] -> y [N].
    Products are summed in fp32 across a [BLOCK_N, BLOCK_K] tile and reduced once at the end. K is a
    constant of the compiled kernel (a model has two or three), so the loop's trip count is known. Every program
    reads all of x (from L2 after the first), so each computes the norm's sum of squares itself.
    PDL (programmatic dependent launch, launched with launch_pdl): the program lets the next kernel launch at once,
    loads its first tile of W (weights: no kernel writes them) and only then waits for the kernel before it (whose
    output x, or the residual, it reads), so that load overlaps the previous kernel's last programs."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
    row_ok = rows < N
    cols = tl.arange(0, BLOCK_K)  # [BLOCK_K]
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_w  # [BLOCK_N, 1]
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    squares = tl.zeros((BLOCK_K,), dtype=tl.float32)
    w = _w_tile(w_rows, row_ok, cols, K, EVEN_K)
    if PDL:
        tl.extra.cuda.gdc_wait()
    acc, squares = _tile(acc, squares, w, x_ptr, g_ptr, cols, K, EVEN_K, NORM, SWIGLU)
    for k0 in range(BLOCK_K, K, BLOCK_K):
        k = k0 + cols
        w = _w_tile(w_rows, row_ok, k, K, EVEN_K)
        acc, squares = _tile(acc, squares, w, x_ptr, g_ptr, k, K, EVEN_K, NORM, SWIGLU)
    y = tl.sum(acc, axis=1)  # [BLOCK_N]
    if NORM:
        y = y * tl.rsqrt(tl.sum(squares, axis=0) / K + eps)
    if RESIDUAL:
        y += tl.load(r_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)


def launch(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor, block_n: int, block_k: int,
           num_warps: int, num_stages: int, norm_weight: torch.Tensor | None = None, eps: float = 0.0,
           swiglu: bool = False, residual: torch.Tensor | None = None, pdl: bool = False) -> None:
    """out [N] = weight [N, K] @ x [K] (x [2K] with swiglu), with the optional norm, activation and residual of
    the module's docstring; x, out, norm_weight [K] and residual [N] contiguous, weight's rows contiguous. pdl:
    launched as a programmatic dependent launch (see _gemv; where pdl_supported)."""
    n, k = weight.shape
    grid = (triton.cdiv(n, block_n),)
    _gemv[grid](x, weight, out, x if norm_weight is None else norm_weight, x if residual is None else residual,
                n, weight.stride(0), eps, K=k, BLOCK_N=block_n, BLOCK_K=block_k, EVEN_K=k % block_k == 0,
                NORM=norm_weight is not None, SWIGLU=swiglu, RESIDUAL=residual is not None,
                PDL=pdl, num_warps=num_warps, num_stages=num_stages, **({"launch_pdl": True} if pdl else {}))


def pdl_supported(device: torch.device) -> bool:
    """Whether this Triton launches kernels as programmatic dependent launches (launch_pdl, Triton 3.4+) and the card
    takes them (compute capability 9.0+: Hopper and later)."""
    from triton.backends.nvidia.compiler import CUDAOptions

    fields = getattr(CUDAOptions, "__dataclass_fields__", {})
    return device.type == "cuda" and "launch_pdl" in fields and torch.cuda.get_device_capability(device) >= (9, 0)
