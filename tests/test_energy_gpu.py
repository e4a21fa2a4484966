"""On a real NVIDIA GPU: torch's device maps to its NVML handle by UUID, the counter moves, a point is metered.

Power limits are only read here (power.backend=none power.policy=observe): never set on a shared GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from energybench.distributed import DistEnv
from energybench.device.gpus import Claim, rank_claim, resolve
from energybench.device.nvml import Nvml
from energybench.energy.samples import read_gpu
from energybench.results.samples import read_samples

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml():
    if os.environ.get("ENERGYBENCH_NVML_MODULE"):
        pytest.skip("the fake NVML is configured")
    session = Nvml()
    yield session
    session.close()


def test_torch_device_maps_to_its_nvml_gpu_by_uuid(nvml) -> None:
    device = torch.device("cuda", 0)
    claim = rank_claim(DistEnv.single(), device)
    info = resolve(Claim(0, 0, uuid=claim.uuid), nvml.gpus())  # torch's UUID alone finds it
    assert info.name == torch.cuda.get_device_name(device)
    assert resolve(Claim(0, 0, visible=claim.visible), nvml.gpus()) == info  # so does CUDA_VISIBLE_DEVICES' entry


def test_counter_moves_and_every_sample_field_reads(nvml) -> None:
    gpu = nvml.gpu(resolve(rank_claim(DistEnv.single(), torch.device("cuda", 0)), nvml.gpus()))
    assert gpu.has_energy_counter
    e0 = gpu.energy_mj()
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    for _ in range(200):
        a = a @ a
        a /= a.norm()
    torch.cuda.synchronize()
    row = read_gpu(gpu)
    assert row["energy_mj"] > e0
    for key in ("power_w", "gpu_util_pct", "mem_used_bytes", "mem_total_bytes", "temperature_c", "sm_clock_mhz",
                "power_limit_w"):
        assert row[key] is not None, key
    assert 10 < row["power_w"] < 2000


def test_point_on_gpu_records_energy_samples_and_observed_cap(nvml, quick, tmp_path: Path) -> None:
    from energybench.point import run_point

    limit_before = nvml.gpu(nvml.gpus()[0]).limit_w()
    cfg = quick("device=cuda", "meter.gpu=nvml", "meter.idle_s=1", "meter.sample_hz=20", "power_cap=250",
                "power.backend=none", "power.policy=observe")
    outcome = run_point(cfg)
    assert outcome.state == "done", outcome.reason
    row = outcome.row
    assert row["energy_j"] > 0 and row["idle_power_w"] > 0 and row["energy_method"] == "nvml_counter"
    assert row["power_cap_w"] == 250 and row["enforced_limit_w"] == limit_before  # recorded, not applied
    assert "power.policy=observe" in row["power_notes"]
    pdir = Path(cfg.out_dir) / cfg.sweep / f"point={row['point_id']}"
    assert pq.read_table(pdir / "gpus.parquet").num_rows == 1
    samples = read_samples(pdir)
    assert samples.num_rows > 0 and set(samples.column("power_cap_w").to_pylist()) == {250.0}
    assert nvml.gpu(nvml.gpus()[0]).limit_w() == limit_before
