"""The node sampler: rate honoured, rows labelled with the open window, parts whole even after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from fake_pynvml import FAKE_GPUS
from energybench.distributed import DistEnv
from energybench.energy.meter import Meter
from energybench.energy.nvml import Nvml
from energybench.energy.sampler import Sampler
from energybench.results.samples import read_samples
from energybench.results.schema import SAMPLES


def open_gpus(n: int) -> tuple[Nvml, list]:
    nvml = Nvml()
    return nvml, [nvml.gpu(info) for info in nvml.gpus()[:n]]


def test_rate_within_ten_percent_and_rows_complete(fake_nvml, tmp_path: Path) -> None:
    nvml, gpus = open_gpus(2)
    meter = Meter(DistEnv.single(), torch.device("cpu"), None)
    constant = {g.uuid: {"power_cap_w": 250.0, "enforced_limit_w": 250.0} for g in gpus}
    sampler = Sampler(gpus, None, 50.0, tmp_path / "samples" / "node=n1", 0.5, meter.open_windows, constant,
                      {"point_id": "p", "attempt": 1})
    sampler.start()
    meter.begin("generation")
    time.sleep(0.5)
    meter.begin("batch0/decode")
    time.sleep(1.5)
    meter.end("batch0/decode")
    meter.end("generation")
    sampler.stop()
    nvml.close()
    table = read_samples(tmp_path)
    assert table.schema.equals(SAMPLES) and set(table.column("node").to_pylist()) == {"n1"}
    rows = table.to_pandas()
    assert len(list((tmp_path / "samples" / "node=n1").glob("part-*.parquet"))) >= 3  # flushed as it ran
    for uuid, group in rows.groupby("gpu_uuid"):
        t = group["timestamp"].sort_values()
        rate_hz = (len(t) - 1) / (t.iloc[-1] - t.iloc[0]).total_seconds()
        assert rate_hz == pytest.approx(50.0, rel=0.10), uuid
    assert set(rows["window"].dropna()) == {"generation", "batch0/decode"}
    assert (rows["power_cap_w"] == 250).all() and (rows["enforced_limit_w"] == 250).all()
    first = rows.iloc[0]
    assert first["power_w"] == 100.0 and first["power_limit_w"] == 700.0 and first["mem_total_bytes"] == 80 * 2**30
    assert first["energy_mj"] > 0 and first["gpu_util_pct"] == 90
    stats = sampler.stats["generation"][gpus[1].uuid].summary()
    assert stats["counter_j"] == pytest.approx(stats["integral_j"], rel=0.02)  # cross-check agrees (constant power)
    assert stats["gpu_util_pct"] == 90 and stats["gpu_mem_used_frac"] == pytest.approx(0.25)


def test_no_timeline_at_zero_hz_but_fallback_gpus_still_integrated(fake_nvml, tmp_path: Path) -> None:
    fake_nvml.configure([{**FAKE_GPUS[0], "energy_counter": False}])
    nvml, gpus = open_gpus(1)
    sampler = Sampler(gpus, None, 0.0, tmp_path / "s", 5.0, lambda: ())
    assert sampler.hz == 10.0 and not sampler.write_rows
    sampler.start()
    time.sleep(1.0)
    energy_j = sampler.integrated_j(gpus[0].uuid)
    sampler.stop()
    nvml.close()
    assert energy_j == pytest.approx(100.0 * 1.0, rel=0.25)  # ~100 W for ~1 s, from power samples
    assert not (tmp_path / "s").exists()


KILLED_SCRIPT = """
import sys, time
from energybench.energy.nvml import Nvml
from energybench.energy.sampler import Sampler

REPO = Path(__file__).resolve().parents[1]
nvml = Nvml()
gpus = [nvml.gpu(info) for info in nvml.gpus()]
Sampler(gpus, None, 200.0, __import__("pathlib").Path(sys.argv[1]), 0.02, lambda: ("generation",),
        node_fields={"point_id": "p", "attempt": 1}).start()
print("sampling", flush=True)
time.sleep(600)
"""


def test_sigkill_leaves_only_readable_parts(fake_nvml, tmp_path: Path) -> None:
    import fake_pynvml

    spec = fake_pynvml.write_spec(tmp_path / "spec.json", FAKE_GPUS)
    out = tmp_path / "node=n1"
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "FAKE_NVML_SPEC": str(spec),
           "ENERGYBENCH_NVML_MODULE": "fake_pynvml"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "sampling"
    deadline = time.monotonic() + 60
    while len(list(out.glob("part-*.parquet"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.137)  # somewhere in the middle of a flush, likely
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 5
    for part in parts:  # every visible part is complete
        assert pq.read_table(part).num_rows > 0
    rows = ds.dataset(out, format="parquet").to_table()  # hidden temporaries (.part-*.tmp) are ignored
    assert rows.num_rows >= 5 * 3
