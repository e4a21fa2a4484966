"""The batch-1 Triton matmul (model/gemv.py): its kernel under Triton's interpreter on the CPU, and the fast
engine with it giving the reference's tokens. The GPU runs of the same kernel are in test_engine_gpu.py."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernel needs the triton package (the [test] extra installs it)")

from energybench.engine import NoHooks, Sampling, make_engine  # noqa: E402
from energybench.model import gemv  # noqa: E402
from energybench.model.build import build_model  # noqa: E402
from tiny import CPU, TINY, one_process, prompts_of  # noqa: E402

GREEDY = Sampling(temperature=0.0, top_p=0.95)


# Triton's interpreter (the same kernel on host tensors) is switched on by conftest.py on hosts without a GPU
interpret = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                               reason="Triton's interpreter is off (a GPU host: test_engine_gpu.py runs the kernel)")


@pytest.mark.parametrize("n, k, tile", [
    (64, 256, gemv.TileConfig(8, 64, 4, 1)),     # every tile full
    (37, 100, gemv.TileConfig(8, 32, 4, 1)),     # ragged rows and columns: both masks
    (1000, 64, gemv.TileConfig(16, 128, 4, 1)),  # a tile wider than K
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@interpret
def test_kernel_computes_the_matrix_vector_product(monkeypatch, n, k, tile, dtype) -> None:
    monkeypatch.setitem(gemv.CONFIGS, (n, k), tile)
    gen = torch.Generator().manual_seed(n + k)
    x = torch.randn(1, 1, k, generator=gen).to(dtype)
    w = (torch.randn(n, k, generator=gen) * k ** -0.5).to(dtype)
    y = gemv.gemv(x, w)
    assert y.shape == (1, 1, n) and y.dtype == dtype
    exact = x.double().view(k) @ w.double().T
    # fp32 sums of exact products: only the output's own rounding is left (fp16 2^-11, bf16 2^-8 relative)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert (y.double().view(n) - exact).abs().max().item() <= tol * exact.abs().max().item()


def test_a_weight_shape_without_a_measured_tile_gets_the_default() -> None:
    assert gemv.config_for(3, 5) == gemv.DEFAULT
    for (n, k), tile in gemv.CONFIGS.items():
        assert gemv.config_for(n, k) == tile
        assert tile.block_n & (tile.block_n - 1) == 0 and tile.block_k & (tile.block_k - 1) == 0  # powers of two


@interpret
def test_only_one_row_is_accepted() -> None:
    with pytest.raises(AssertionError, match="one row"):
        gemv.gemv(torch.zeros(2, 1, 8), torch.zeros(4, 8))


def test_usable_where_triton_can_run_it(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not gemv.usable(CPU, torch.float32)  # a CPU without the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert gemv.usable(CPU, torch.float32) and gemv.usable(CPU, torch.float16)
    assert not gemv.usable(CPU, torch.float64)


@interpret
def test_fast_engine_with_gemv_gives_the_reference_tokens() -> None:
    """Batch 1 (every step through the kernel, output projection included) and a batch that shrinks to 1 as its
    rows finish: the same greedy tokens as the reference engine."""
    from energybench.engine.fast import FastEngine

    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=7)
        model.setup_caches(4, 64)
        for lengths, limits in (([9], [12]), ([5, 9, 3], [4, 12, 7])):
            prompts = prompts_of(lengths, TINY.vocab_size, seed=4)
            ref = make_engine("reference", model, GREEDY, torch.Generator().manual_seed(0))
            expected = ref.generate(prompts, limits, NoHooks()).outputs
            engine = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), gemv=True)
            assert engine.decoder.gemv and not engine.eager.gemv  # decode steps only; prefill stays cuBLAS/eager
            assert engine.generate(prompts, limits, NoHooks()).outputs == expected


def test_gemv_where_it_cannot_run_is_refused_in_one_line(monkeypatch) -> None:
    from energybench.engine.fast import FastEngine

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=7)
        model.setup_caches(2, 64)
        with pytest.raises(ValueError, match=r"gemv=True needs Triton .* use gemv=False"):
            FastEngine(model, GREEDY, torch.Generator().manual_seed(0), gemv=True)


def test_the_benchmarks_tile_grid_is_read_or_refused_in_one_line() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gemv import grid_of

    assert grid_of("4,8/512/4/1,3") == [(4, 512, 4, 1), (4, 512, 4, 3), (8, 512, 4, 1), (8, 512, 4, 3)]
    with pytest.raises(SystemExit, match=r"--grid '8/512': give four lists"):
        grid_of("8/512")
