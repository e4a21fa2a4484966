"""A point's measurement on one rank (fake NVML): idle baseline, generation, per-GPU table and run columns."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq
import pytest
import torch

from fake_pynvml import FAKE_GPUS
from energybench.config import MeterConfig
from energybench.distributed import DistEnv
from energybench.device.gpus import job_gpus
from energybench.device.limits import GpuLimit
from energybench.energy.session import measurement
from energybench.results.samples import read_samples

A, B = FAKE_GPUS[0]["uuid"], FAKE_GPUS[1]["uuid"]
CPU = torch.device("cpu")


def run(tmp_path: Path, limits: dict | None = None, cpu: str = "none",
        during: Callable[[], None] = lambda: None) -> tuple[dict, list[dict]]:
    """Idle 0.5 s, then a 'generation' window of ~2.4 s holding two batches' windows (`during` called in it), through
    the real session."""
    env = DistEnv.single()
    cfg = MeterConfig(gpu="nvml", cpu=cpu, sample_hz=20, idle_s=0.5, flush_s=1)
    with job_gpus("nvml", None, env, CPU) as node, \
            measurement(cfg, env, CPU, node, limits or {}, [], tmp_path, {"point_id": "p", "attempt": 1}) as m:
        m.idle()
        m.meter.begin("generation")
        during()
        for i in range(2):
            for phase, s in (("prefill", 0.4), ("decode", 0.8)):
                m.meter.begin(f"batch{i}/{phase}")
                time.sleep(s)
                m.meter.end(f"batch{i}/{phase}")
        generation = m.meter.end("generation")
        columns = m.summary(generation, "p", 1, tmp_path)
    return {**columns, "energy_j": generation.total_energy_j, "duration_s": generation.duration_s}, \
        pq.read_table(tmp_path / "gpus.parquet").to_pylist()


def test_idle_phases_and_cross_check(fake_nvml, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the rank's GPU is NVML's GPU 1, drawing 200 W
    row, gpus = run(tmp_path, {B: GpuLimit(B, 1, None, 700.0, 700.0)})
    assert [g["gpu_uuid"] for g in gpus] == [B]
    g = gpus[0]
    assert g["energy_j"] == pytest.approx(200 * row["duration_s"], rel=0.03)
    assert g["prefill_energy_j"] + g["decode_energy_j"] == pytest.approx(g["energy_j"], rel=0.05)
    assert g["idle_power_w"] == pytest.approx(200, rel=0.03) and row["idle_power_w"] == g["idle_power_w"]
    assert g["counter_vs_integral"] == pytest.approx(1, abs=0.03) == row["counter_vs_integral"]
    assert (g["enforced_limit_w"], row["enforced_limit_w"], g["power_cap_w"]) == (700.0, 700.0, None)
    assert row["energy_method"] == "nvml_counter" and g["samples"] >= 10


def test_pre_volta_gpu_is_integrated_and_flagged(fake_nvml, tmp_path: Path, monkeypatch) -> None:
    fake_nvml.configure([{**FAKE_GPUS[0], "energy_counter": False, "demand_w": 150.0}])
    row, gpus = run(tmp_path)
    g = gpus[0]
    assert g["energy_method"] == "power_integral" and "no energy counter" in g["note"]
    assert row["energy_method"] == "power_integral"
    assert g["energy_j"] == pytest.approx(150 * row["duration_s"], rel=0.1)  # from 20 Hz power samples
    assert g["counter_vs_integral"] is None  # nothing to cross-check against


def test_a_refused_field_is_null_and_noted(fake_nvml, tmp_path: Path) -> None:
    refused = {"nvmlDeviceGetUtilizationRates": fake_nvml.NVML_ERROR_NO_PERMISSION}
    fake_nvml.configure([{**FAKE_GPUS[0], "errors": refused}])
    row, gpus = run(tmp_path)
    assert gpus[0]["gpu_util_pct"] is None and row["gpu_util_pct"] is None  # not 0
    assert "nvmlDeviceGetUtilizationRates failed: NVML error 4 (Insufficient Permissions)" in row["energy_notes"]
    assert row["energy_j"] is not None  # the rest is still measured


def test_rapl_is_read_by_the_sampler_process(fake_nvml, tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "powercap"
    for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "dram")):
        (root / zone).mkdir(parents=True)
        (root / zone / "name").write_text(name + "\n")
        (root / zone / "energy_uj").write_text("1000000\n")
        (root / zone / "max_energy_range_uj").write_text("262143328850\n")
    monkeypatch.setenv("ENERGYBENCH_POWERCAP_ROOT", str(root))  # the sampler process inherits it

    def draw() -> None:  # 30 J on the package and 5 J on DRAM inside the generation window
        for zone, uj in (("intel-rapl:0", 31_000_000), ("intel-rapl:0:0", 6_000_000)):
            (root / "new").write_text(f"{uj}\n")
            (root / "new").replace(root / zone / "energy_uj")  # whole, as the sampler may read it now

    row, _ = run(tmp_path, cpu="rapl", during=draw)
    assert (row["cpu_energy_j"], row["dram_energy_j"]) == (30.0, 5.0)
    samples = read_samples(tmp_path).to_pandas()
    assert samples["cpu_energy_j"].max() == 30.0 and samples["dram_energy_j"].max() == 5.0
