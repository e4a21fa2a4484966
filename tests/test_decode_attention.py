"""The split-KV decode attention kernel (model/decode_attention.py: attend_split) under Triton's interpreter on the
CPU, against the same attention in float64. The GPU runs of the same kernel are in test_engine_gpu.py."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernel needs the triton package (the [test] extra installs it)")

from energybench.engine import NoHooks, Sampling, make_engine  # noqa: E402
from energybench.engine.fast import FastEngine  # noqa: E402
from energybench.model import decode_attention as da  # noqa: E402
from energybench.model import llama  # noqa: E402
from energybench.model.build import build_model  # noqa: E402
from tiny import CPU, TINY, one_process, prompts_of  # noqa: E402

interpret = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                               reason="Triton's interpreter is off (a GPU host: test_engine_gpu.py runs the kernel)")


def exact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Softmax attention of each row's query over its slots [0, lens[b]) in float64, [B, 1, H * D]."""
    rows = []
    for b, n in enumerate(lens.tolist()):
        qd, kd, vd = q[b, 0].double(), k[b, :n].double(), v[b, :n].double()  # [H, D], [n, H, D]
        probs = torch.softmax(torch.einsum("hd,thd->ht", qd, kd) / qd.shape[-1] ** 0.5, dim=-1)
        rows.append(torch.einsum("ht,thd->hd", probs, vd).reshape(1, -1))
    return torch.stack(rows)


@pytest.mark.parametrize(("kv_together", "stages"), [(False, 0), (True, 0), (True, 2)])
@pytest.mark.parametrize("splits", [1, 2, 4, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@interpret
def test_kernel_attends_to_each_rows_own_slots(splits: int, dtype: torch.dtype, kv_together: bool,
                                               stages: int) -> None:
    """Rows of 1 slot, a ragged length, exactly one tile and the whole cache; more splits than a short row has
    tiles (empty splits); slots past each length poisoned with huge values, so a read past it shows. Both load
    orders (kv_together: a tile's V loaded with its K), and the pipelined walk over the tiles (stages 2)."""
    gen = torch.Generator().manual_seed(splits)
    bsz, slots, heads, dim = 4, 64, 2, 16
    k = torch.randn(bsz + 1, slots, heads, dim, generator=gen).to(dtype)  # one cache row more than the batch
    v = torch.randn(bsz + 1, slots, heads, dim, generator=gen).to(dtype)
    lens = torch.tensor([1, 13, 16, 64], dtype=torch.int32)
    for row, n in enumerate(lens.tolist()):
        k[row, n:], v[row, n:] = 1e4, 1e4
    q = torch.randn(bsz, 1, heads, dim, generator=gen).to(dtype)
    got = da.attend_split(q, k, v, lens, splits, 16, 4, kv_together, stages)
    assert got.shape == (bsz, 1, heads * dim) and got.dtype == dtype
    tol = {torch.float32: 1e-5, torch.float16: 2e-3}[dtype]
    assert (got.double() - exact(q, k, v, lens)).abs().max().item() <= tol


@interpret
def test_attend_lens_on_the_cpu_is_the_masked_kernel_with_the_same_result() -> None:
    """Off the GPU attend_lens masks one scaled_dot_product_attention; the split kernel computes the same."""
    gen = torch.Generator().manual_seed(1)
    k, v = torch.randn(3, 128, 4, 32, generator=gen), torch.randn(3, 128, 4, 32, generator=gen)
    q, lens = torch.randn(3, 1, 4, 32, generator=gen), torch.tensor([5, 128, 70], dtype=torch.int32)
    masked = da.attend_lens(q, k, v, lens, 128)
    assert (masked - da.attend_split(q, k, v, lens)).abs().max().item() < 1e-5
    assert (masked.double() - exact(q, k, v, lens)).abs().max().item() < 1e-5


def test_the_plan_fills_the_card_at_small_batches_and_stays_within_the_cache() -> None:
    """7B's 32 heads: 16 programs per (row, head) of 16-slot tiles at batch 1, 4 of 32 at batch 16, one of 64 at
    batch 64 (the tiles benchmarks/decode_attention.py found fastest); never a grid past TARGET_PROGRAMS once split,
    never more splits than tiles of the cache, 2 warps."""
    heads = 32
    plans = {b: da.split_plan(b * heads, 2048) for b in (1, 2, 4, 8, 16, 32, 64)}
    assert [(plans[b][0], plans[b][1].block_t) for b in (1, 16, 64)] == [(16, 16), (4, 32), (1, 64)]
    assert all(plans[b][0] >= plans[2 * b][0] for b in (1, 2, 4, 8, 16, 32))
    assert all(b * heads * splits <= da.TARGET_PROGRAMS for b, (splits, _) in plans.items() if splits > 1)
    assert {tile.num_warps for _, tile in plans.values()} == {da.NUM_WARPS}
    assert da.split_plan(heads, 64)[0] == 2  # a 64-slot cache holds two 32-slot tiles
    assert da.split_plan(heads, 32)[0] == 1


def test_split_kernel_runs_only_where_it_can() -> None:
    cpu = torch.device("cpu")
    assert not da.split_usable(cpu, torch.float64, 128)
    assert da.split_usable(cpu, torch.float16, 128) == (os.environ.get("TRITON_INTERPRET") == "1")
    assert not da.split_usable(cpu, torch.float16, 100)  # heads of 100 (OpenLLaMA-3B): not a power of two


@interpret
def test_kernel_reads_no_further_than_the_cache_and_gives_zeros_for_no_slots() -> None:
    """A length past the cache's slots reads the whole row (no further: the next row holds huge values); a length
    of 0 gives zeros, at one split and at several (no engine makes either; the kernel stays in bounds)."""
    gen = torch.Generator().manual_seed(2)
    k, v = torch.randn(3, 32, 2, 16, generator=gen), torch.randn(3, 32, 2, 16, generator=gen)
    k[2], v[2] = 1e4, 1e4
    q = torch.randn(2, 1, 2, 16, generator=gen)
    for splits in (1, 4):
        got = da.attend_split(q, k, v, torch.tensor([0, 999], dtype=torch.int32), splits, 16, 4)
        assert got[0].abs().max().item() == 0.0
        full = exact(q[1:], k[1:2], v[1:2], torch.tensor([32]))
        assert (got[1:].double() - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("kv_together", [False, True])
@interpret
def test_the_fast_engine_with_the_split_kernel_gives_the_reference_tokens(monkeypatch, kv_together: bool) -> None:
    """attention=lens with every decode step's attention through the split kernel (on a GPU attend_lens calls it;
    here it is put in attend_lens's place): rows finishing at different steps, the batch shrinking, greedy tokens
    equal to the reference's; kv_together (fast_tuned's form) reaches the kernel."""
    calls = []

    def split(q, k_cache, v_cache, kv_lens, n_slots, together=False):
        calls.append((q.shape[0], together))
        return da.attend_split(q, k_cache, v_cache, kv_lens, kv_together=together)

    monkeypatch.setattr(llama, "attend_lens", split)
    greedy = Sampling(temperature=0.0, top_p=0.95)
    lengths, limits = [3, 12, 7], [5, 9, 2]
    with one_process():
        model = build_model(TINY, CPU, torch.float32, seed=3)
        model.setup_caches(4, 64)
        prompts = prompts_of(lengths, TINY.vocab_size, seed=5)
        want = make_engine("reference", model, greedy, torch.Generator().manual_seed(0)).generate(
            prompts, limits, NoHooks()).outputs
        engine = FastEngine(model, greedy, torch.Generator().manual_seed(0), attention="lens", kv_together=kv_together)
        assert engine.generate(prompts, limits, NoHooks()).outputs == want
    assert len(calls) == TINY.n_layers * (max(limits) - 1) and set(calls) == {(4, kv_together), (2, kv_together),
                                                                               (1, kv_together)}


def test_the_benchmarks_table_keeps_every_kernel_and_the_fastest_tile_per_batch(tmp_path) -> None:
    """benchmarks/decode_attention.py's summary: each named kernel's rows, and of the tile grid only the fastest
    measured tile of each (batch, lengths); the markdown names each run's card, date, commit and command."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import decode_attention as bench

    def row(kernel: str, batch: int, tile: str, ms: float | None) -> dict:
        return {"kernel": kernel, "batch": batch, "lengths": "equal", "tile": tile, "ms_per_layer": ms,
                "gpu": "card", "date": "2026-11-30T00:00:00", "git_commit": "abc", "command": "python x"}

    records = [row("mask", 1, "", 0.013), row("split", 1, "16/2/16", 0.006), row("split_tile", 1, "16/2/16", 0.0064),
               row("split_tile", 1, "32/2/8", 0.0062), row("split_tile", 1, "64/1/4", None),
               row("split_tile", 64, "64/2/1", 0.05), row("split_tile", 64, "32/2/2", 0.058),
               row("split_together_tile", 64, "32/1/1", 0.044), row("split_together_tile", 64, "64/2/1", 0.052)]
    kept = bench.summary(records)
    assert [(r["kernel"], r["batch"], r["tile"]) for r in kept] == [
        ("mask", 1, ""), ("split", 1, "16/2/16"), ("split_tile", 1, "32/2/8"), ("split_tile", 64, "64/2/1"),
        ("split_together_tile", 64, "32/1/1")]
    bench.write_markdown(records, tmp_path / "d.md")
    text = (tmp_path / "d.md").read_text()
    assert "- card, 2026-11-30, commit abc: `python x`" in text and "32/2/8" in text and "32/2/2" not in text


def test_the_plan_of_the_kernel_loading_k_and_v_at_once() -> None:
    """kv_together (fast_tuned): batch 3-32 of 32 heads two splits of 64-slot tiles, batch 1-2 and 33 up the plain
    plan's tiles (batch 1's own fastest tile was slower inside a step: the comment above TOGETHER_GRID), and a cache
    too short for two 64-slot tiles the plain plan too."""
    heads = 32
    for b in (1, 2, 33, 64, 128):
        assert da.split_plan(b * heads, 256, kv_together=True) == da.split_plan(b * heads, 256), b
    for b in (3, 16, 32):
        assert da.split_plan(b * heads, 256, kv_together=True) == (2, da.SplitTile(64, 2)), b
    assert da.split_plan(16 * heads, 64, kv_together=True) == da.split_plan(16 * heads, 64)
