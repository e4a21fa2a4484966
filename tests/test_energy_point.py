"""End to end on CPU with the fake NVML at the pynvml boundary: a power-cap sweep fills every energy column and
streams samples; a point stopped by SIGTERM restores the limits itself, one killed by SIGKILL through the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import energybench.results as results
from fake_pynvml import FAKE_GPUS
from energybench.results.samples import read_samples

REPO = Path(__file__).resolve().parents[1]

C = FAKE_GPUS[2]["uuid"]  # demands 300 W; the caps below hold it to the cap
FOUND = {g["uuid"]: 700.0 for g in FAKE_GPUS}


@pytest.fixture
def fake_env(tmp_path: Path) -> dict:
    """Environment of a child process whose `pynvml` is the fake, GPU limits kept in a shared file."""
    import fake_pynvml

    limits = tmp_path / "fake-limits.json"
    spec = fake_pynvml.write_spec(tmp_path / "spec.json", FAKE_GPUS, state_file=str(limits))
    return fake_pynvml.child_env(spec, CUDA_VISIBLE_DEVICES="2", _LIMITS=str(limits))


def limits_w(env: dict) -> dict[str, float]:
    path = Path(env["_LIMITS"])
    return json.loads(path.read_text()) if path.exists() else FOUND


def test_power_cap_sweep_fills_energy_columns_and_samples(tmp_path: Path, fake_env: dict) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "energybench.sweep", "-m", "experiment=quickstart", "samples=8", "max_tokens=8",
         "batch=4", "meter.gpu=nvml", "meter.idle_s=0.5", "meter.sample_hz=20", "meter.flush_s=1",
         "power_cap=250,200", f"out_dir={out}"],
        cwd=REPO, env=fake_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    points = results.load(out).set_index("power_cap_w")
    assert sorted(points.index) == [200.0, 250.0]
    for cap, p in points.iterrows():
        assert p["energy_j"] == pytest.approx(cap * p["duration_s"], rel=0.03)  # the GPU drew the cap
        assert p["power_w"] == pytest.approx(cap, rel=0.03)
        assert p["idle_power_w"] == pytest.approx(cap, rel=0.05)  # idle measured at the cap, before warm-up
        assert abs(p["net_energy_j"]) < 0.05 * p["energy_j"]
        assert p["prefill_energy_j"] + p["decode_energy_j"] == pytest.approx(p["energy_j"], rel=0.03)
        assert p["energy_per_token_j"] == pytest.approx(p["energy_j"] / p["tokens"])
        assert p["counter_vs_integral"] == pytest.approx(1.0, abs=0.03)
        assert (p["gpu_util_pct"], p["gpu_mem_used_frac"]) == (90.0, 0.25)
        assert p["enforced_limit_w"] == cap and p["energy_method"] == "nvml_counter"
        assert p["cpu_energy_j"] != p["cpu_energy_j"] and "CPU energy not measured" in p["energy_notes"]  # null + why
    for point_dir in results.point_dirs(out):
        gpus = pq.read_table(point_dir / "gpus.parquet").to_pandas()
        assert list(gpus["gpu_uuid"]) == [C] and list(gpus["gpu_index"]) == [2]  # CUDA_VISIBLE_DEVICES=2
        samples = read_samples(point_dir).to_pandas()
        assert set(samples["gpu_uuid"]) == {C} and len(samples) >= 20
        assert {"idle", "warmup0/prefill", "batch0/prefill"} <= set(samples["window"])
        assert (samples["power_cap_w"] == gpus["power_cap_w"][0]).all()
        assert samples["energy_mj"].dropna().is_monotonic_increasing and samples["energy_mj"].notna().sum() >= 2
        assert not (point_dir / "power-state").exists() or not any((point_dir / "power-state").iterdir())
    assert limits_w(fake_env) == FOUND  # every limit put back


def start_capped_point(tmp_path: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    """A point child that caps GPU 2 to 300 W, then idles; returns once the cap is on."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "energybench.point", "experiment=quickstart", "samples=4", "max_tokens=4", "batch=4",
         "meter.gpu=nvml", "meter.idle_s=300", "power_cap=300", f"out_dir={out}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while limits_w(env)[C] != 300.0:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the point never applied its cap"
        time.sleep(0.2)
    return proc, next(out.glob("*/point=*"))


def test_sigterm_to_a_running_point_restores_the_limit(tmp_path: Path, fake_env: dict) -> None:
    proc, point_dir = start_capped_point(tmp_path, fake_env)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output
    assert limits_w(fake_env) == FOUND, output
    status = json.loads((point_dir / "status.json").read_text())
    assert status["state"] == "failed" and "received SIGTERM" in status["reason"]
    assert list((point_dir / "power-state").glob("*.json")) == []


def test_sigkilled_point_is_restored_by_the_cli(tmp_path: Path, fake_env: dict) -> None:
    proc, point_dir = start_capped_point(tmp_path, fake_env)
    proc.kill()
    proc.wait()
    assert limits_w(fake_env)[C] == 300.0  # nothing could run in the killed process
    restore = subprocess.run([sys.executable, "-m", "energybench.power", "restore", str(point_dir / "power-state")],
                             env=fake_env, capture_output=True, text=True, timeout=120)
    assert restore.returncode == 0, restore.stderr
    assert limits_w(fake_env) == FOUND
