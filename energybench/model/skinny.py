"""Decode matmuls of 2 to MAX_ROWS rows (batch 2-16) as a Triton GEMM instead of cuBLAS.

At batch 2-16 a decode step still reads every weight once, now for a few rows: the product is bound by the weights'
bytes. On an H200 cuBLAS and cuBLASLt read 7B's packed fp16 weights at 16 rows at 3.4 TB/s; the Triton GEMM of
model/skinny_kernel.py (each program streaming a block of W's rows through the tensor cores, both operands loaded by
the tensor memory accelerator) reads them at 3.8 TB/s, 4-14 % faster on every shape (docs/benchmarks/skinny.md). At
64 rows it is not faster than cuBLASLt, so past MAX_ROWS the op hands the matmul to the library. `skinny(x, weight)`
is a torch custom op (`energybench::skinny`): torch.compile keeps it as one call and a CUDA graph captures it. The fused
model calls it where `usable` (a CUDA card of compute capability 9.0+, for the tensor memory accelerator; Triton;
fp16) and its variant asks for it (`fast_tuned`).
"""

from __future__ import annotations

import torch

from energybench.model import gemv
from energybench.model.gemv import TileConfig  # the same four numbers: weight rows per program, columns, warps, stages

MAX_ROWS = 16  # rows (batch) up to which the fused model's matmuls take this kernel

DEFAULT = TileConfig(block_n=32, block_k=256, num_warps=2, num_stages=3)
# (rows N, columns K) of a weight -> the tile benchmarks/skinny.py measured fastest for it at 16 rows: one H200, fp16,
# commit 9434e42 (docs/benchmarks/skinny.json; LLaMA 7B's packed weights). Other shapes take DEFAULT.
CONFIGS: dict[tuple[int, int], TileConfig] = {
    (4096, 4096): TileConfig(32, 256, 2, 5),
    (4096, 11008): TileConfig(32, 256, 2, 5),
    (12288, 4096): TileConfig(32, 256, 2, 3),
    (22016, 4096): TileConfig(64, 128, 2, 3),
    (32000, 4096): TileConfig(64, 128, 2, 3),
}


def config_for(n: int, k: int) -> TileConfig:
    return CONFIGS.get((n, k), DEFAULT)


def usable(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the kernel runs on `device` in `dtype`: where model.gemv.usable (Triton; a CPU under Triton's
    interpreter for tests), in fp16 (the dtype it was measured and checked in; float32 too on the interpreter), on a
    CUDA card of compute capability 9.0+ (its loads are the Hopper tensor memory accelerator's)."""
    if not gemv.usable(device, dtype) or dtype == torch.bfloat16:
        return False
    return device.type == "cpu" or torch.cuda.get_device_capability(device) >= (9, 0)


def fits(x: torch.Tensor) -> bool:
    """Whether matmuls of `x` ([..., K]) can go through `skinny`: rows whose bytes are a multiple of 16 (the tensor
    memory accelerator's stride; every LLaMA width is). A constant of the model, so the compiled code tests no batch
    size for it."""
    return x.shape[-1] * x.element_size() % 16 == 0


@torch.library.custom_op("energybench::skinny", mutates_args=())
def skinny(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., K] (where `fits`); weight [N, K], row-contiguous. Returns x @ weight.T, [..., N] in x's dtype: through
    the Triton GEMM (summed in fp32) for up to MAX_ROWS rows, through torch.mm (PyTorch's BLAS library, as the
    engine set it while capturing) for more. The choice is made here, at run time, so one compiled graph serves every
    batch size above one (a test of the rows in the model would split the compiled code at MAX_ROWS)."""
    from energybench.model import skinny_kernel

    *lead, width = x.shape
    n, k = weight.shape
    assert width == k and weight.stride(1) == 1, (tuple(x.shape), tuple(weight.shape), weight.stride())
    rows = x.numel() // k
    if rows > MAX_ROWS:
        return torch.mm(x.reshape(rows, k), weight.t()).view(*lead, n)
    out = torch.empty((rows, n), dtype=x.dtype, device=x.device)
    skinny_kernel.launch(x.reshape(rows, k).contiguous(), weight, out, *config_for(n, k))
    return out.view(*lead, n)


@skinny.register_fake
def _skinny_shape(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
