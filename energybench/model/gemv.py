"""Batch-1 decode matmuls (one row times a weight matrix) as a Triton kernel instead of cuBLAS.

At batch 1 a decode step is the weights' matrix-vector products: every weight byte is read once for one row.
On an H200 cuBLAS's M=1 kernels read 7B's packed fp16 weights at 3.5 TB/s, 73 % of the card's 4.8; this kernel
reads them at 4.0 TB/s (83 %) and draws more power doing it (docs/benchmarks/gemv-before.md: the kernel before its
first tile moved ahead of the loop). `gemv(x, weight)` is one Triton kernel (model/gemv_kernel.py) whose programs
each stream a block of the weight's rows, with a tile shape per weight shape (CONFIGS, measured by
benchmarks/gemv.py; DEFAULT elsewhere). It is a torch custom op (`energybench::gemv`), so torch.compile keeps it as
one call and a CUDA graph captures it. The fused model calls it for one-row inputs where `usable` (a CUDA device,
Triton, fp16/bf16), with the layer's RMSNorm folded into the projections that follow a norm, SwiGLU into w2's and the
residual add into wo's and w2's (model/gemv_kernel.py), so a batch-1 layer launches no kernel of its own for norms,
activation or residuals.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import NamedTuple

import torch

DTYPES = (torch.float16, torch.bfloat16)


class TileConfig(NamedTuple):
    block_n: int  # weight rows per program
    block_k: int  # columns read per loop iteration
    num_warps: int
    num_stages: int


DEFAULT = TileConfig(block_n=8, block_k=512, num_warps=4, num_stages=1)
# (rows N, columns K) of a weight -> the tile benchmarks/gemv.py measured fastest for it: one H200, fp16, commit
# b0bc251, docs/benchmarks/gemv-before.json (LLaMA 7B and 13B, and one rank of 65B at shards=2, projections apart and
# packed). Another card runs them too; its own run of the benchmark prints its table.
CONFIGS: dict[tuple[int, int], TileConfig] = {
    (4096, 4096): TileConfig(4, 1024, 8, 1),
    (4096, 8192): TileConfig(4, 1024, 8, 3),
    (4096, 11008): TileConfig(4, 512, 4, 3),
    (5120, 5120): TileConfig(8, 512, 4, 1),
    (5120, 13824): TileConfig(4, 512, 4, 1),
    (8192, 4096): TileConfig(4, 1024, 8, 1),
    (8192, 11008): TileConfig(4, 256, 4, 3),
    (11008, 4096): TileConfig(32, 256, 8, 3),
    (11008, 8192): TileConfig(32, 256, 8, 3),
    (12288, 4096): TileConfig(16, 256, 4, 1),
    (12288, 8192): TileConfig(16, 512, 8, 1),
    (13824, 5120): TileConfig(4, 512, 4, 1),
    (15360, 5120): TileConfig(4, 512, 8, 3),
    (16000, 8192): TileConfig(32, 512, 4, 3),
    (22016, 4096): TileConfig(4, 1024, 8, 3),
    (22016, 8192): TileConfig(8, 512, 4, 1),
    (27648, 5120): TileConfig(4, 512, 4, 1),
    (32000, 4096): TileConfig(4, 1024, 8, 3),
    (32000, 5120): TileConfig(4, 512, 4, 3),
}


# What the kernel folds in (model/gemv_kernel.py), as fast_tuned's batch-1 layer asks for it: "" (none), "norm"
# (wqkv, w13, output), "residual" (wo), "swiglu+residual" (w2). (rows N, columns K, form) -> the tile
# benchmarks/gemv.py measured fastest for that shape doing that, in the run behind CONFIGS (elsewhere the plain
# product's tile).
FOLDED_CONFIGS: dict[tuple[int, int, str], TileConfig] = {
    (4096, 4096, "residual"): TileConfig(4, 1024, 8, 1),
    (4096, 11008, "swiglu+residual"): TileConfig(4, 512, 4, 1),
    (5120, 5120, "residual"): TileConfig(8, 512, 4, 1),
    (5120, 13824, "swiglu+residual"): TileConfig(8, 512, 8, 1),
    (8192, 4096, "residual"): TileConfig(4, 256, 4, 1),
    (8192, 11008, "swiglu+residual"): TileConfig(32, 512, 4, 3),
    (12288, 4096, "norm"): TileConfig(32, 256, 8, 1),
    (12288, 8192, "norm"): TileConfig(16, 512, 4, 1),
    (15360, 5120, "norm"): TileConfig(8, 512, 4, 1),
    (16000, 8192, "norm"): TileConfig(32, 512, 4, 3),
    (22016, 4096, "norm"): TileConfig(32, 256, 8, 1),
    (22016, 8192, "norm"): TileConfig(32, 256, 8, 3),
    (27648, 5120, "norm"): TileConfig(4, 512, 4, 1),
    (32000, 4096, "norm"): TileConfig(32, 256, 8, 1),
    (32000, 5120, "norm"): TileConfig(4, 512, 4, 1),
}


def form_of(norm: bool, swiglu: bool, residual: bool) -> str:
    """The name of what one call folds in: "", or "norm", "swiglu", "residual" joined by "+"."""
    return "+".join(name for name, on in (("norm", norm), ("swiglu", swiglu), ("residual", residual)) if on)


def config_for(n: int, k: int, form: str = "") -> TileConfig:
    """The tile for a weight [n, k] doing `form`. A form without the residual takes the tile measured with it
    where only that was: at shards > 1 a row-parallel layer's rank 0 adds the residual and the other ranks do not,
    and every rank must run the same tile, or the all-reduce after it waits for the slowest (measured: 65B at
    shards=2, rank 1's w2 with the plain product's tile, +1.2 ms of all-reduce per step on rank 0)."""
    with_residual = form_of("norm" in form, "swiglu" in form, True)
    found = FOLDED_CONFIGS.get((n, k, form)) or FOLDED_CONFIGS.get((n, k, with_residual))
    return found or CONFIGS.get((n, k), DEFAULT)


TRITON = importlib.util.find_spec("triton") is not None  # a constant: compiled code may ask (decode_attention)


def triton_runs(device: torch.device) -> bool:
    """Whether energybench's Triton kernels can run on `device` at all: a CUDA card of compute capability 8.0+ with
    Triton, or, for tests, a CPU under Triton's interpreter (TRITON_INTERPRET=1, which runs the same kernels on host
    tensors)."""
    if not TRITON:
        return False
    if device.type == "cpu":
        return os.environ.get("TRITON_INTERPRET") == "1"
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether energybench's model kernels (this one, and model/decode_attention.py's) can run on `device` in
    `dtype`: where triton_runs, in fp16/bf16 (float32 too under the interpreter)."""
    dtypes = (*DTYPES, torch.float32) if device.type == "cpu" else DTYPES
    return triton_runs(device) and dtype in dtypes


@functools.cache
def pdl_on(device: torch.device) -> bool:
    """Whether energybench's Triton kernels (this one's and model/decode_attention.py's) run as programmatic dependent
    launches on `device` (model/gemv_kernel.py: _gemv): where gemv_kernel.pdl_supported (Hopper and later, Triton
    3.4+; not ROCm; read once per process), unless ENERGYBENCH_PDL=0. Each kernel then lets the next one launch
    while its own last programs run, and the next one loads its first weights before it waits: on an H200, 7B's
    batch-1 forward of fast_tuned 3.74 -> 3.57 ms (docs/engine.md: the profiles of commits 657c9d3 and c0b200c)."""
    if os.environ.get("ENERGYBENCH_PDL", "1") == "0" or device.type != "cuda" or not TRITON or torch.version.hip:
        return False
    from energybench.model import gemv_kernel

    return gemv_kernel.pdl_supported(device)


@torch.library.custom_op("energybench::gemv", mutates_args=())
def gemv(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None = None, eps: float = 0.0,
         swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] holding one row (every leading dimension 1); weight [N, K], rows contiguous. Returns
    x @ weight.T, [..., N] in x's dtype, summed in fp32. With `norm_weight` [K]: RMSNorm(x) (epsilon `eps`,
    weight norm_weight) @ weight.T without writing the normed row; with `swiglu`: x holds [gate; up] ([..., 2K])
    and the product is (silu(gate) * up) @ weight.T; with `residual` [..., N]: that row is added to the result."""
    from energybench.model import gemv_kernel

    *lead, width = x.shape
    n, k = weight.shape
    assert width == (2 * k if swiglu else k) and weight.stride(1) == 1, (tuple(x.shape), tuple(weight.shape),
                                                                          weight.stride(), swiglu)
    assert x.numel() == width, f"gemv takes one row; got x of shape {tuple(x.shape)}"
    assert norm_weight is None or norm_weight.shape == (k,), (tuple(norm_weight.shape), k)
    assert residual is None or residual.numel() == n, (tuple(residual.shape), n)
    out = torch.empty((*lead, n), dtype=x.dtype, device=x.device)
    tile = config_for(n, k, form_of(norm_weight is not None, swiglu, residual is not None))
    gemv_kernel.launch(x.reshape(width).contiguous(), weight, out.view(n), *tile,
                       norm_weight=None if norm_weight is None else norm_weight.contiguous(), eps=eps, swiglu=swiglu,
                       residual=None if residual is None else residual.reshape(n).contiguous(),
                       pdl=pdl_on(x.device))
    return out


@gemv.register_fake
def _gemv_shape(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None = None,
                eps: float = 0.0, swiglu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
