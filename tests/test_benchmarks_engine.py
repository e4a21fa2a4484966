"""benchmarks/engine.py and engine_logits.py on CPU (plumbing: model `tiny`, no energy): what they record, how
records merge, and that the logits check can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import engine as bench  # noqa: E402 (benchmarks/engine.py)

pytestmark = pytest.mark.slow


def run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_engine_py_records_each_engine_and_variant(tmp_path: Path) -> None:
    proc = run("engine.py", "--models", "tiny", "--engines", "fast_tuned,reference,fast", "--batches", "1,2",
               "--new-tokens", "4", "--prompt-tokens", "6", "--min-window-s", "0.05", "--compile-cache", "off",
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    # fast_tuned packs the model's projections in place: it runs after the engines that do not
    assert [r["engine"] for r in records] == ["reference"] * 2 + ["fast"] * 2 + ["fast_tuned"] * 2
    assert {r["variant"] for r in records} == {"default"}
    for r in records:  # what each engine chose, as run.parquet records it (point.engine_columns): nothing for Meta's
        fast = r["engine"] != "reference"
        assert (r["attention"], r["top_p_kernel"], r["pdl"]) == (("mask", False, False) if fast else (None,) * 3)
        assert r["blas"] is None and r["compile_prefill"] == (False if fast else None)
        assert r["kv_together"] == (False if fast else None)  # a CPU: no split kernel
        assert r["skinny"] == (False if fast else None)  # nor the batch 2-16 GEMM
        assert r["defer_residual"] == (False if fast else None)  # fast_tuned on a CPU is fast: nor the deferred add
    assert all(r["roofline_frac"] is None and r["git_commit"] and r["command"].startswith("python benchmarks/engine.py")
               for r in records)  # no card on CPU: no roofline
    assert "| fast_tuned | default | 1 |" in (tmp_path / "engine.md").read_text()


def test_cold_and_warm_starts_are_separate_records_and_old_rows_read_as_default(tmp_path: Path) -> None:
    base = {"engine": "fast", "model": "7b", "batch": 1, "shards": 1, "prompt_tokens": 100, "new_tokens": 128,
            "gpu": "NVIDIA H200", "date": "2026-11-30", "git_commit": "abc", "command": "c", "tokens_per_s": 1.0}
    old = {**base, "compile_cache_hits": 6, "compile_cache_misses": 0, "tokens_per_s": 0.5}  # before variants
    (tmp_path / "engine.json").write_text(json.dumps([old]))
    cold = {**base, "variant": "default", "compile_cache_hits": 0, "compile_cache_misses": 6}
    warm = {**base, "variant": "default", "compile_cache_hits": 6, "compile_cache_misses": 0}
    bench.write_docs(tmp_path, [cold])
    assert len(json.loads((tmp_path / "engine.json").read_text())) == 2  # the old warm row stays beside the cold
    bench.write_docs(tmp_path, [warm])
    records = json.loads((tmp_path / "engine.json").read_text())
    assert sorted(bench.start(r) for r in records) == ["cold", "warm"]
    assert 0.5 not in [r["tokens_per_s"] for r in records]  # the variant-less warm row was replaced by the new one


def test_engine_logits_match_on_cpu_and_a_zero_tolerance_fails(tmp_path: Path) -> None:
    ok = run("engine_logits.py", "--model", "tiny", "--dtypes", "float32", "--shards", "2", "--out", str(tmp_path))
    assert ok.returncode == 0, ok.stderr[-3000:]
    (row,) = json.loads((tmp_path / "engine-logits.json").read_text())
    assert row["ok"] and row["shards"] == 2 and row["rel_rms"] < 1e-5 and row["argmax_agree"] == 1.0
    strict = run("engine_logits.py", "--model", "tiny", "--dtypes", "float32", "--tolerance", "float32=0",
                 "--out", str(tmp_path / "strict"))
    assert strict.returncode == 1  # fp32 on CPU differs by rounding (~1e-7): not within a tolerance of 0
    (row,) = json.loads((tmp_path / "strict" / "engine-logits.json").read_text())
    assert row["ok"] is False and row["rel_rms"] > 0


def test_engine_logits_with_the_triton_kernel_at_batch_1_and_only_there(tmp_path: Path, capsys) -> None:
    """--gemv (fast_tuned's batch-1 layer: the kernel with norms, SwiGLU and residuals folded in) at shards=2
    under Triton's interpreter matches the reference; with a batch > 1 the kernel would never run: refused."""
    import os

    import engine_logits

    if os.environ.get("TRITON_INTERPRET") == "1":
        ok = run("engine_logits.py", "--model", "tiny", "--dtypes", "float32", "--shards", "2", "--gemv", "--batch",
                 "1", "--prompt-tokens", "4", "--new-tokens", "3", "--out", str(tmp_path))  # the interpreter is slow
        assert ok.returncode == 0, ok.stderr[-3000:]
        (row,) = json.loads((tmp_path / "engine-logits.json").read_text())
        assert row["ok"] and row["variant"] == "gemv" and row["batch"] == 1 and row["rel_rms"] < 1e-5
    with pytest.raises(SystemExit) as exit_:
        engine_logits.parse(["--gemv", "--batch", "4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--gemv with --batch 4: the Triton kernel takes batch-1 steps only; give --batch 1" in err


def test_start_is_named_from_the_compile_cache_counters() -> None:
    from variants import start_of

    assert [start_of(0, 6), start_of(6, 0), start_of(3, 3), start_of(0, 0), start_of(6, 0, used=False)] == \
        ["cold", "warm", "partly warm", "no compile", "no compile"]


def test_transformers_over_several_devices_is_split_by_layers_and_generates() -> None:
    """engine.py --shards N runs transformers in one process with its layers split over the N GPUs, as
    from_pretrained(device_map=...) would; here the same dispatch over two CPU "devices"."""
    import torch

    from bench_worker import _hf, hf_model  # noqa: E402 (benchmarks/bench_worker.py; imports torch)
    from energybench.confload import compose

    cfg = compose(["model=tiny", "dataset=synthetic"]).model
    model = hf_model(cfg, torch.device("cpu"), torch.float32, devices=[torch.device("cpu")] * 2)
    assert [k for k in model.hf_device_map if k.startswith("model.layers.")] == \
        [f"model.layers.{i}" for i in range(cfg.n_layers)]
    tokens, wasted, _ = _hf(model, [[1, 5, 6, 7], [1, 8, 9, 10]], 6)(6)
    assert tokens + wasted == 12 and tokens > 0


def test_the_fast_engine_experiments_round_trip_through_a_workers_command_line() -> None:
    """What engine.py passes its worker processes (variants.variant_argv) parses back into the same experiments, the
    variant name says each one, and FastEngine gets them as keyword arguments (variants.engine_options)."""
    import argparse

    from variants import add_variant_args, engine_options, variant_argv, variant_of

    ap = argparse.ArgumentParser()
    add_variant_args(ap)
    args = ap.parse_args(["--gemv", "--blas", "cublaslt", "--compile-prefill", "--kv-together", "--skinny",
                          "--defer-residual", "--attention", "mask", "--span-budget", "0.25", "--inductor",
                          "max_autotune=False", "--apart"])
    assert vars(ap.parse_args(variant_argv(args))) == vars(args)
    assert variant_of(args, {"max_autotune": False}) == \
        "apart+gemv+attention=mask+span_budget=0.25+blas=cublaslt+compile_prefill+kv_together+skinny+defer_residual" \
        "+max_autotune=False"
    assert engine_options(args) == {"pack": False, "attention": "mask", "gemv": True, "span_budget": 0.25,
                                    "blas": "cublaslt", "compile_prefill": True, "kv_together": True,
                                    "skinny": True, "defer_residual": True}
    assert variant_of(ap.parse_args([]), {}) == "default" and variant_argv(ap.parse_args([])) == []
