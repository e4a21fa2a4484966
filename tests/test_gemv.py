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


@pytest.mark.parametrize("folded", [("norm",), ("swiglu", "residual"), ("residual",), ("norm", "residual")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n, k, tile", [(48, 128, gemv.TileConfig(8, 64, 4, 1)),
                                        (37, 100, gemv.TileConfig(8, 32, 4, 1))])
@interpret
def test_kernel_folds_the_norm_the_activation_and_the_residual(monkeypatch, n, k, tile, dtype, folded) -> None:
    """The batch-1 layer's elementwise work inside the product: RMSNorm (scale and weight) before it, SwiGLU
    of [gate; up] before it, the residual after it; against the same arithmetic done apart in float64."""
    monkeypatch.setitem(gemv.CONFIGS, (n, k), tile)
    gen = torch.Generator().manual_seed(n * k)
    swiglu = "swiglu" in folded
    x = (torch.randn(1, 1, 2 * k if swiglu else k, generator=gen) * 3).to(dtype)
    w = (torch.randn(n, k, generator=gen) * k ** -0.5).to(dtype)
    g = (1 + torch.rand(k, generator=gen)).to(dtype) if "norm" in folded else None
    r = torch.randn(1, 1, n, generator=gen).to(dtype) if "residual" in folded else None
    eps = 1e-5
    y = gemv.gemv(x, w, g, eps, swiglu, r)
    assert y.shape == (1, 1, n) and y.dtype == dtype
    a = x.double().view(-1)
    if swiglu:
        gate, up = a[:k], a[k:]
        a = gate * torch.sigmoid(gate) * up
    if g is not None:
        a = a * torch.rsqrt(a.pow(2).mean() + eps) * g.double()
    exact = a @ w.double().T
    if r is not None:
        exact = exact + r.double().view(n)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3}[dtype]
    assert (y.double().view(n) - exact).abs().max().item() <= tol * exact.abs().max().item()


@interpret
def test_a_batch_1_layer_folds_its_elementwise_work_into_the_kernel(monkeypatch) -> None:
    """The fused model with gemv at batch 1: five kernel calls per layer's four products plus the output's, the
    norms, SwiGLU and residuals among their arguments, and the logits of the plain fused step."""
    from energybench.model import llama

    calls: list[tuple[bool, bool, bool]] = []

    def counted(x, weight, norm_weight=None, eps=0.0, swiglu=False, residual=None):
        calls.append((norm_weight is not None, swiglu, residual is not None))
        return gemv.gemv(x, weight, norm_weight, eps, swiglu, residual)

    monkeypatch.setattr(llama, "gemv_op", counted)
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=3)
        model.setup_caches(2, 64)
        model.pack_projections()
        plain, folded = model.variant(fused=True), model.variant(fused=True, gemv=True)
        prompt = torch.tensor(prompts_of([5], TINY.vocab_size, seed=1))
        causal = torch.full((1, 1, 5, 5), float("-inf")).triu_(1)
        plain(prompt, torch.arange(5).view(1, 5), 5, causal)
        assert calls == []  # five rows: no kernel
        token, position = torch.tensor([[17]]), torch.tensor([[5]])
        expected = plain(token, position, 6)
        got = folded(token, position, 6)
    n = TINY.n_layers
    assert sorted(calls) == sorted([(True, False, False)] * (2 * n + 1) + [(False, False, True)] * n
                                   + [(False, True, True)] * n)
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def test_a_weight_shape_without_a_measured_tile_gets_the_default() -> None:
    assert gemv.config_for(3, 5) == gemv.DEFAULT and gemv.config_for(3, 5, "norm") == gemv.DEFAULT
    for (n, k), tile in gemv.CONFIGS.items():
        assert gemv.config_for(n, k) == gemv.FOLDED_CONFIGS.get((n, k, "residual"), tile)  # (see below)
        assert tile.block_n & (tile.block_n - 1) == 0 and tile.block_k & (tile.block_k - 1) == 0  # powers of two
    for (n, k, form), tile in gemv.FOLDED_CONFIGS.items():
        assert form in ("norm", "residual", "swiglu+residual") and gemv.config_for(n, k, form) == tile
        assert (n, k) in gemv.CONFIGS  # measured in the same run as the plain product
    n, k = next(iter(gemv.CONFIGS))
    assert gemv.config_for(n, k, "norm+swiglu") == gemv.CONFIGS[(n, k)]  # a form never measured: the plain tile
    # ranks that skip the residual (all but rank 0 of a row-parallel layer) run rank 0's tile
    for (n, k, form), tile in gemv.FOLDED_CONFIGS.items():
        if form.endswith("residual"):
            assert gemv.config_for(n, k, form.removesuffix("residual").rstrip("+")) == tile, (n, k, form)
    assert gemv.form_of(True, False, True) == "norm+residual" and gemv.form_of(False, False, False) == ""


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


@pytest.fixture
def fresh_pdl():
    """gemv.pdl_on's per-process answer forgotten before and after the test (it monkeypatches what it reads)."""
    gemv.pdl_on.cache_clear()
    yield
    gemv.pdl_on.cache_clear()


def test_programmatic_dependent_launch_where_the_card_takes_it_unless_switched_off(monkeypatch, fresh_pdl) -> None:
    from energybench.model import gemv_kernel

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(gemv_kernel, "pdl_supported", lambda device: device.type == "cuda")  # a Hopper card
    for setting, on in ((None, True), ("1", True), ("0", False)):
        if setting is None:
            monkeypatch.delenv("ENERGYBENCH_PDL", raising=False)
        else:
            monkeypatch.setenv("ENERGYBENCH_PDL", setting)
        gemv.pdl_on.cache_clear()
        assert gemv.pdl_on(gpu) == on and not gemv.pdl_on(CPU), setting  # never on a CPU (the interpreter)
    monkeypatch.delenv("ENERGYBENCH_PDL")
    monkeypatch.setattr(gemv, "TRITON", False)  # a CUDA build without Triton: never asks the kernel module
    gemv.pdl_on.cache_clear()
    assert not gemv.pdl_on(gpu)
    monkeypatch.setattr(gemv, "TRITON", True)
    monkeypatch.setattr(gemv_kernel, "pdl_supported", lambda device: False)  # an Ampere card, or an older Triton
    gemv.pdl_on.cache_clear()
    assert not gemv.pdl_on(gpu)


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


def test_the_matmul_benchmarks_read_their_models_and_name_their_run() -> None:
    """benchmarks/gemv.py's helpers, shared with skinny.py: --models' NAME[:SHARDS] entries as presets; every record's
    card, date, versions and command; the fraction of the card's datasheet bandwidth (none for an unknown card); the
    markdown's run line."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from gemv import model_specs, run_facts, run_line

    from energybench.device.cards import card_for

    specs = model_specs("7b,65b:2")
    assert [(name, shards, cfg.n_layers) for name, shards, cfg in specs] == [("7b", 1, 32), ("65b", 2, 80)]
    common, frac = run_facts("skinny.py", ["--rows", "64"], "NVIDIA H200")
    assert common["gpu"] == "NVIDIA H200" and common["command"] == "python benchmarks/skinny.py --rows 64"
    assert common["torch"] == torch.__version__ and "git_commit" in common and common["date"]
    assert frac(card_for("NVIDIA H200").mem_bandwidth_gb_s / 2) == pytest.approx(0.5)
    assert run_facts("gemv.py", [], "Some Card")[1](1000.0) is None
    line = run_line({**common, "git_commit": "abcdef123"})
    assert line.startswith("Run: NVIDIA H200, ") and "commit abcdef1, torch " in line
    assert line.rstrip().endswith("`python benchmarks/skinny.py --rows 64`.")
