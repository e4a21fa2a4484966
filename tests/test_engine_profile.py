"""benchmarks/engine_profile.py: kernel names sort into the categories of a decode step, and a CPU run (the
plumbing check) writes records whose parts add up to the step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from engine_profile import category, split_profile  # noqa: E402


@pytest.mark.parametrize("name, expected", [
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NTN", "matmul"),  # cuBLAS on Hopper
    ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize", "matmul"),
    ("void gemv2T_kernel_val<int, int, __half, __half, float, 128, 16, 4, 4, false>", "matmul"),
    ("void pytorch_flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128>>", "attention"),
    ("fmha_cutlassF_f16_aligned_64x64_rf_sm80", "attention"),
    ("ncclDevKernel_AllReduce_Sum_f16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "allreduce"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "other"),
    ("_gemv", "matmul"), ("_skinny", "matmul"),  # energybench's Triton GEMV and GEMM (model/gemv.py, skinny.py)
    ("_decode_attention_partial", "attention"), ("_decode_attention_combine", "attention"),
    # inductor's elementwise kernels named after the op that reads what they write: not that op's category
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_skinny_2", "other"),
    ("triton_poi_fused__to_copy_add_arange_decode_attention_index_put_mul_select_stack_1", "other"),
    ("triton_tem_fused_mm_0", "matmul"), ("triton_tem_fused_flex_attention_0", "attention"),  # inductor templates
    ("aten::mm", "matmul"), ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
])
def test_kernel_names_sort_into_the_step_categories(name: str, expected: str) -> None:
    assert category(name) == expected


def test_the_parts_and_the_gaps_add_up_to_the_forward() -> None:
    parts = split_profile([("nvjet_x", 3.0), ("flash_fwd", 1.0), ("ncclDevKernel_AllReduce", 0.5),
                           ("triton_poi_fused", 0.25)], total_ms=5.0)
    assert parts == {"matmul_ms": 3.0, "attention_ms": 1.0, "allreduce_ms": 0.5, "other_kernels_ms": 0.25,
                     "forward_gaps_ms": 0.25}
    assert split_profile([("nvjet_x", 6.0)], total_ms=5.0)["forward_gaps_ms"] == 0.0  # overlap is not negative


def test_a_cpu_run_writes_records_whose_parts_add_up(tmp_path: Path) -> None:
    argv = [sys.executable, str(REPO / "benchmarks" / "engine_profile.py"), "--model", "tiny", "--device", "cpu",
            "--batches", "1,2", "--new-tokens", "8", "--repeats", "5", "--compile-cache", "off", "--out", str(tmp_path)]
    for _ in range(2):  # the second run replaces the first run's records (same key)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    packed = subprocess.run(argv + ["--apart", "--inductor", "coordinate_descent_tuning=True"], capture_output=True,
                            text=True, timeout=600)
    assert packed.returncode == 0, packed.stderr[-3000:]
    records = json.loads((tmp_path / "engine-profile.json").read_text())
    assert [(r["variant"], r["batch"]) for r in records] == [
        ("apart+coordinate_descent_tuning=True", 1), ("apart+coordinate_descent_tuning=True", 2),
        ("default", 1), ("default", 2)]  # an experiment's rows stand beside the default's
    for r in records:
        assert r["start"] == "no compile" and r["compile_cache_misses"] == 0 and r["engine_ready_s"] >= 0
        # a step is a forward, a draw and host work, timed in separate windows: on a busy CPU the forward's median
        # can exceed the step's, so the parts are checked to add up rather than compared
        assert r["forward_ms"] > 0 and r["sampling_ms"] > 0 and r["step_ms"] > 0
        assert r["host_ms"] == pytest.approx(r["step_ms"] - r["forward_ms"] - r["sampling_ms"])
        # the profile sees the forward's operators and sorts them (sizes are not compared: CPU profiles of a tiny
        # model on a shared machine swing with any stall; CI once saw attention at 4x the matmuls)
        assert r["matmul_ms"] > 0 and r["attention_ms"] > 0 and r["forward_gaps_ms"] >= 0
        assert r["tokens_per_s"] > 0 and r["roofline_frac"] is None  # no card for "cpu"
        # the prefill alone: timed, its operators sorted like a decode forward's, the call's own prefill beside it
        assert r["prefill_ms"] > 0 and r["prefill_call_ms"] > 0 and r["prefill_matmul_ms"] > 0
        assert r["prefill_gaps_ms"] >= 0 and r["prefill_top_kernels"]
        assert r["command"].startswith("python benchmarks/engine_profile.py") and "git_commit" in r
    assert "| tiny | 1 | 2 | default | mask | no compile |" in (tmp_path / "engine-profile.md").read_text()
    bad = subprocess.run(argv + ["--inductor", "no_such_option=1"], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "torch._inductor.config has no no_such_option" in bad.stderr
