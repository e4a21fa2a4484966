"""The batch 2-16 Triton GEMM (model/skinny.py): its kernel under Triton's interpreter on the CPU, which matmuls take
it, and the fast engine with it giving the reference's tokens. Its GPU run is in test_engine_gpu.py."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernel needs the triton package (the [test] extra installs it)")

from energybench.engine import NoHooks, Sampling, make_engine  # noqa: E402
from energybench.model import skinny, skinny_kernel  # noqa: E402
from energybench.model.build import build_model  # noqa: E402
from tiny import CPU, TINY, one_process, prompts_of  # noqa: E402

GREEDY = Sampling(temperature=0.0, top_p=0.95)
interpret = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                               reason="Triton's interpreter is off (a GPU host: test_engine_gpu.py runs the kernel)")


@pytest.mark.parametrize("rows", [1, 2, 5, 16, 17, 64, 65])  # 17-64: WIDE_CONFIGS' tile; past WIDE_ROWS: torch.mm
@pytest.mark.parametrize("n, k, tile", [
    (64, 256, skinny.TileConfig(32, 64, 4, 3)),     # every tile full
    (37, 96, skinny.TileConfig(32, 64, 4, 3)),      # ragged rows of W and a ragged last block of K
    (64, 256, skinny.TileConfig(32, 64, 4, 3, 3)),  # split-K: 4 blocks of K over 3 programs (the last has one)
    (37, 96, skinny.TileConfig(16, 32, 4, 3, 4)),   # split-K: 3 blocks of K over 4 programs (the last has none)
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@interpret
def test_kernel_computes_the_product(monkeypatch, rows, n, k, tile, dtype) -> None:
    monkeypatch.setitem(skinny.CONFIGS, (n, k), tile)
    monkeypatch.setitem(skinny.WIDE_CONFIGS, (n, k), tile)
    gen = torch.Generator().manual_seed(rows + n)
    x = torch.randn(rows, 1, k, generator=gen).to(dtype)
    w = (torch.randn(n, k, generator=gen) * k ** -0.5).to(dtype)
    y = skinny.skinny(x, w)
    assert y.shape == (rows, 1, n) and y.dtype == dtype
    exact = x.double().view(rows, k) @ w.double().T
    tol = {torch.float32: 1e-5, torch.float16: 3e-3}[dtype]
    assert (y.double().view(rows, n) - exact).abs().max().item() <= tol
    if tile.split_k > 1 and rows <= skinny.WIDE_ROWS:  # the counters are back at zero, and a second call gives the
        assert not skinny_kernel.counters(x.device).any()  # same bits (the partials summed in split order)
        assert torch.equal(skinny.skinny(x, w), y)


@interpret
def test_the_op_takes_the_kernel_past_max_rows_only_for_wide_configs_shapes(monkeypatch) -> None:
    launched = []
    monkeypatch.setattr(skinny_kernel, "launch",
                        lambda x, weight, out, *tile, swiglu=False: launched.append((x.shape[0], tile)))
    monkeypatch.setitem(skinny.WIDE_CONFIGS, (64, 32), skinny.TileConfig(32, 32, 4, 3, 2))
    for rows in (8, 40):
        for n in (64, 48):
            skinny.skinny(torch.zeros(rows, 32, dtype=torch.float16), torch.zeros(n, 32, dtype=torch.float16))
    assert launched == [(8, skinny.DEFAULT), (8, skinny.DEFAULT), (40, skinny.TileConfig(32, 32, 4, 3, 2))]
    assert skinny.config_for(64, 32, skinny.WIDE_ROWS + 1) is None


def test_which_widths_fit_it_and_where_it_runs(monkeypatch) -> None:
    fp16 = torch.float16
    assert skinny.fits(torch.zeros(4, 1, 64, dtype=fp16)) and skinny.fits(torch.zeros(4, 1, 100))
    assert not skinny.fits(torch.zeros(4, 1, 100, dtype=fp16))  # 200-byte rows: not the TMA's 16-byte stride
    assert skinny.config_for(4096, 11008) == skinny.CONFIGS[(4096, 11008)]
    assert skinny.config_for(5, 7) == skinny.DEFAULT
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert skinny.usable(CPU, torch.float32) and skinny.usable(CPU, fp16)
    assert not skinny.usable(CPU, torch.bfloat16)  # neither measured nor checked in bf16
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not skinny.usable(CPU, fp16)


@interpret
def test_fast_engine_with_skinny_gives_the_reference_tokens_and_runs_the_kernel_up_to_max_rows(monkeypatch) -> None:
    from energybench.engine.fast import FastEngine

    rows_seen, outputs = [], []
    real = skinny_kernel.launch

    def counting(x, weight, out, *tile, swiglu=False):
        rows_seen.append(x.shape[0])
        outputs.append(weight.shape[0] == TINY.vocab_size)
        return real(x, weight, out, *tile, swiglu=swiglu)

    monkeypatch.setattr(skinny_kernel, "launch", counting)
    monkeypatch.setattr(skinny, "MAX_ROWS", 2)  # batch 4 past it: torch.mm inside the op
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=7)
        model.setup_caches(4, 64)
        lengths, limits = [5, 9, 3], [4, 12, 7]
        prompts = prompts_of(lengths, TINY.vocab_size, seed=4)
        expected = make_engine("reference", model, GREEDY, torch.Generator().manual_seed(0)).generate(
            prompts, limits, NoHooks()).outputs
        engine = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), skinny=True)
        assert engine.skinny and engine.decoder.skinny and not engine.eager.skinny  # decode steps only
        assert engine.generate(prompts, limits, NoHooks()).outputs == expected
    # the steps of batch buckets 2 and 1 (4 matmuls a layer and the output projection; without gemv=True batch 1
    # takes it too) launch the kernel; bucket 4 (past MAX_ROWS) does not, nor does the prefill (the engine's prefill
    # runs the plain fused model)
    assert set(rows_seen) == {1, 2}
    assert sum(outputs) * (4 * TINY.n_layers + 1) == len(rows_seen)  # a step: 4 a layer and one output projection


def test_skinny_where_it_cannot_run_is_refused_in_one_line(monkeypatch) -> None:
    from energybench.engine.fast import FastEngine

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=7)
        model.setup_caches(2, 64)
        with pytest.raises(ValueError, match=r"skinny=True needs Triton and a CUDA card of compute capability 9\.0\+ "
                                             r"in fp16 .* use skinny=False"):
            FastEngine(model, GREEDY, torch.Generator().manual_seed(0), skinny=True)


def test_the_benchmark_grid_takes_an_optional_fifth_list_of_split_k_counts() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from skinny import grid_of  # benchmarks/skinny.py

    assert grid_of("32/128/4/3") == [(32, 128, 4, 3, 1)]
    assert grid_of("16,32/64/4/3/1,4") == [(16, 64, 4, 3, 1), (16, 64, 4, 3, 4), (32, 64, 4, 3, 1), (32, 64, 4, 3, 4)]
    with pytest.raises(SystemExit, match="four or five lists"):
        grid_of("32/128/4")


@pytest.mark.parametrize("rows", [1, 3, 16, 17, 64, 65])  # the kernel up to WIDE_ROWS; torch.mm and fp32 past it
@pytest.mark.parametrize("half, k, tile", [
    (64, 128, skinny.TileConfig(64, 64, 4, 3)),    # 32-row blocks of w1 and of w3: every tile full
    (40, 96, skinny.TileConfig(32, 64, 4, 3)),     # 16-row blocks: the last block's rows run into w3's (masked)
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@interpret
def test_swiglu_form_computes_silu_of_the_gate_times_up(monkeypatch, rows, half, k, tile, dtype) -> None:
    monkeypatch.setitem(skinny.CONFIGS, (2 * half, k), tile)
    monkeypatch.setitem(skinny.WIDE_CONFIGS, (2 * half, k), tile)
    assert skinny.config_for(2 * half, k, rows, swiglu=True) == (
        None if rows > skinny.WIDE_ROWS else tile._replace(block_n=tile.block_n // 2))
    gen = torch.Generator().manual_seed(rows + half)
    x = torch.randn(rows, 1, k, generator=gen).to(dtype)
    w = (torch.randn(2 * half, k, generator=gen) * k ** -0.5).to(dtype)
    y = skinny.skinny(x, w, swiglu=True)
    assert y.shape == (rows, 1, half) and y.dtype == dtype
    exact = x.double().view(rows, k) @ w.double().T
    want = torch.nn.functional.silu(exact[:, :half]) * exact[:, half:]
    tol = {torch.float32: 1e-5, torch.float16: 4e-3}[dtype]
    assert (y.double().view(rows, half) - want).abs().max().item() <= tol * max(1.0, want.abs().max().item())


@interpret
def test_the_fused_model_takes_the_swiglu_form_only_for_shapes_it_covers(monkeypatch) -> None:
    from energybench.engine.fast import FastEngine

    forms = []
    real = skinny_kernel.launch

    def recording(x, weight, out, *tile, swiglu=False):
        forms.append((tuple(weight.shape), swiglu))
        return real(x, weight, out, *tile, swiglu=swiglu)

    monkeypatch.setattr(skinny_kernel, "launch", recording)
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=7)
        model.setup_caches(4, 64)
        w13 = tuple(model.variant(fused=True).layers[0].feed_forward.w1.weight.shape)
        lengths, limits = [5, 9, 3, 6], [4, 12, 7, 5]
        prompts = prompts_of(lengths, TINY.vocab_size, seed=4)
        expected = make_engine("reference", model, GREEDY, torch.Generator().manual_seed(0)).generate(
            prompts, limits, NoHooks()).outputs
        packed = (2 * w13[0], w13[1])
        assert not skinny.swiglu_covers(*packed)  # not one of WIDE_CONFIGS' shapes: the product, then SwiGLU apart
        engine = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), skinny=True)
        assert engine.generate(prompts, limits, NoHooks()).outputs == expected
        assert (packed, False) in forms and not any(swiglu for _, swiglu in forms)
        forms.clear()
        monkeypatch.setitem(skinny.WIDE_CONFIGS, packed, skinny.TileConfig(32, 32, 4, 3))
        engine = FastEngine(model, GREEDY, torch.Generator().manual_seed(0), skinny=True)
        assert engine.generate(prompts, limits, NoHooks()).outputs == expected
    assert (packed, True) in forms and (packed, False) not in forms  # w1 and w3's product always in SwiGLU form
