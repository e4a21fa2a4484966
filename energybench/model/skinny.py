"""Decode matmuls of 2 to MAX_ROWS rows (batch 2-16) as a Triton GEMM instead of cuBLAS.

At batch 2-16 a decode step still reads every weight once, now for a few rows: the product is bound by the weights'
bytes. On an H200 cuBLAS and cuBLASLt read 7B's packed fp16 weights at 16 rows at 3.4 TB/s; the Triton GEMM of
model/skinny_kernel.py (each program streaming a block of W's rows through the tensor cores, both operands loaded by
the tensor memory accelerator) reads them at 3.8 TB/s, 5-14 % faster on every shape (docs/benchmarks/skinny.md). At
64 rows it is faster than cuBLASLt only on the wide shapes (WIDE_CONFIGS: 7B's wqkv, w1/w3, with SwiGLU in its
epilogue, and output projection); past MAX_ROWS the op hands the others to the library. `skinny(x, weight)`
is a torch custom op (`energybench::skinny`): torch.compile keeps it as one call and a CUDA graph captures it. The fused
model calls it where `usable` (a CUDA card of compute capability 9.0+, for the tensor memory accelerator; Triton;
fp16) and its variant asks for it (`fast_tuned`).
"""

from __future__ import annotations

import torch

from typing import NamedTuple

from energybench.model import gemv


class TileConfig(NamedTuple):
    block_n: int  # weight rows per program
    block_k: int  # columns read per loop iteration
    num_warps: int
    num_stages: int
    split_k: int = 1  # programs per block of weight rows, each over its share of the columns (skinny_kernel.launch)


MAX_ROWS = 16  # rows (batch) up to which the fused model's matmuls take this kernel for every weight shape
WIDE_ROWS = 64  # past MAX_ROWS up to this many rows, the shapes of WIDE_CONFIGS take it; the others torch.mm

DEFAULT = TileConfig(block_n=32, block_k=256, num_warps=2, num_stages=3)
# (rows N, columns K) of a weight -> the tile benchmarks/skinny.py measured fastest for it at 16 rows: one H200, fp16,
# commit 9434e42 (git show f8e3344:docs/benchmarks/skinny.json; LLaMA 7B's packed weights). e3e8a5d's run
# (docs/benchmarks/skinny.json) found the same tiles but for the output projection's (32/128/2/3: 63.2 against 63.4 us
# for this one). Other shapes take DEFAULT.
CONFIGS: dict[tuple[int, int], TileConfig] = {
    (4096, 4096): TileConfig(32, 256, 2, 5),
    (4096, 11008): TileConfig(32, 256, 2, 5),
    (12288, 4096): TileConfig(32, 256, 2, 3),
    (22016, 4096): TileConfig(64, 128, 2, 3),
    (32000, 4096): TileConfig(64, 128, 2, 3),
}


# (rows N, columns K) -> the tile for MAX_ROWS < rows <= WIDE_ROWS, where benchmarks/skinny.py measured the Triton GEMM
# faster than cuBLASLt at 64 rows (one H200, fp16; the record, commit e3e8a5d, docs/benchmarks/skinny.json: LLaMA 7B's
# w1/w3 47.6 against 48.6 us, output projection 67.0 against 69.9, wqkv 27.9 against 29.1; an exploratory run at
# deff2f3 with the split-K grid found the first two more than 2 % faster, wqkv 2 % or less). Elsewhere cuBLASLt stayed
# ahead, split-K or not (4096 x 11008: 27.4 against 25.6): torch.mm. docs/engine.md has the engine's steps with
# and without wqkv's tile.
WIDE_CONFIGS: dict[tuple[int, int], TileConfig] = {
    (12288, 4096): TileConfig(64, 128, 4, 3),
    (22016, 4096): TileConfig(64, 64, 4, 4),
    (32000, 4096): TileConfig(64, 64, 4, 3),
}


def config_for(n: int, k: int, rows: int = MAX_ROWS, swiglu: bool = False) -> TileConfig | None:
    """The tile of a product of `rows` rows with a weight [n, k]; None: torch.mm's. swiglu (the kernel's SwiGLU form
    on a packed [w1; w3] of n rows): the product's tile with half its block of rows, so each program still streams
    as many rows of W (half of them w1's, half w3's)."""
    tile = CONFIGS.get((n, k), DEFAULT) if rows <= MAX_ROWS else WIDE_CONFIGS.get((n, k)) if rows <= WIDE_ROWS else None
    if tile is None or not swiglu:
        return tile
    return tile._replace(block_n=max(16, tile.block_n // 2), split_k=1)


def swiglu_covers(n: int, k: int) -> bool:
    """Whether `skinny(..., swiglu=True)` runs the Triton kernel for a packed [w1; w3] of shape [n, k] at every row
    count up to WIDE_ROWS (the model then takes it; elsewhere the product and an inductor-fused SwiGLU are
    faster than the op's torch.mm and eager SwiGLU)."""
    return (n, k) in WIDE_CONFIGS


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
def skinny(x: torch.Tensor, weight: torch.Tensor, swiglu: bool = False) -> torch.Tensor:
    """x [..., K] (where `fits`); weight [N, K], row-contiguous. Returns x @ weight.T, [..., N] in x's dtype: through
    the Triton GEMM (summed in fp32) for up to MAX_ROWS rows and, for the shapes of WIDE_CONFIGS, up to WIDE_ROWS;
    through torch.mm (PyTorch's BLAS library, as the engine set it while capturing) for the others. swiglu: weight
    is a packed [w1; w3] and the result silu(x @ w1.T) * (x @ w3.T), [..., N / 2] (the kernel's SwiGLU form; past its
    tiles, torch.mm and the same arithmetic in fp32). The choice is made here, at run time, so one compiled graph
    serves every batch size above one (a test of the rows in the model would split the compiled code at MAX_ROWS)."""
    from energybench.model import skinny_kernel

    *lead, width = x.shape
    n, k = weight.shape
    assert width == k and weight.stride(1) == 1, (tuple(x.shape), tuple(weight.shape), weight.stride())
    rows = x.numel() // k
    tile = config_for(n, k, rows, swiglu)
    if tile is None:
        y = torch.mm(x.reshape(rows, k), weight.t())
        if swiglu:
            gate, up = y.float().chunk(2, dim=-1)
            y = (torch.nn.functional.silu(gate) * up).to(x.dtype)
        return y.view(*lead, y.shape[-1])
    out = torch.empty((rows, n // 2 if swiglu else n), dtype=x.dtype, device=x.device)
    skinny_kernel.launch(x.reshape(rows, k).contiguous(), weight, out, *tile, swiglu=swiglu)
    return out.view(*lead, out.shape[-1])


@skinny.register_fake
def _skinny_shape(x: torch.Tensor, weight: torch.Tensor, swiglu: bool = False) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0] // 2 if swiglu else weight.shape[0]))
