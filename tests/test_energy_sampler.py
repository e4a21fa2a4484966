"""The node's sampler process: rate honoured, rows labelled with the open window, nothing read in the measured
process, parts whole after SIGKILL, and the process gone with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import Pipe
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import torch

from fake_pynvml import FAKE_GPUS
from energybench.distributed import DistEnv
from energybench.energy.meter import Meter
from energybench.device.limits import GpuLimit
from energybench.device.nvml import Nvml
from energybench.energy.sampler import Sampler, SamplerError
from energybench.results.samples import read_samples
from energybench.results.schema import SAMPLES

FIELDS = {"point_id": "p", "attempt": 1}


def open_gpus(n: int) -> tuple[Nvml, list]:
    nvml = Nvml()
    return nvml, [nvml.gpu(info) for info in nvml.gpus()[:n]]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_rate_rows_and_nothing_read_in_the_measured_process(fake_nvml, tmp_path: Path) -> None:
    nvml, gpus = open_gpus(2)
    limits = {g.uuid: GpuLimit(g.uuid, g.index, 250.0, 700.0, 250.0) for g in gpus}
    sampler = Sampler(gpus, False, 50.0, tmp_path / "samples" / "node=n1", 0.5, limits, FIELDS)
    sampler.start()
    meter = Meter(DistEnv.single(), torch.device("cpu"), None, sampler.set_windows)
    threads, calls = threading.active_count(), len(fake_nvml.calls())
    meter.begin("generation")
    time.sleep(0.5)
    meter.begin("batch0/decode")
    time.sleep(1.5)
    meter.end("batch0/decode")
    meter.end("generation")
    assert len(fake_nvml.calls()) == calls and threading.active_count() == threads  # all of it in the other process
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
    assert sampler.ticks == len(rows) // 2
    assert set(rows["window"].dropna()) == {"generation", "batch0/decode"}
    assert (rows["power_cap_w"] == 250).all() and (rows["enforced_limit_w"] == 250).all()
    first = rows.iloc[0]
    assert first["power_w"] == 100.0 and first["power_limit_w"] == 700.0 and first["mem_total_bytes"] == 80 * 2**30
    assert first["energy_mj"] > 0 and first["gpu_util_pct"] == 90
    stats = sampler.stats["generation"][gpus[1].uuid]
    assert stats["counter_j"] == pytest.approx(stats["integral_j"], rel=0.02)  # cross-check agrees (constant power)
    assert stats["gpu_util_pct"] == 90 and stats["gpu_mem_used_frac"] == pytest.approx(0.25)
    assert 80 <= stats["samples"] <= 110  # ~2 s at 50 Hz


def test_a_window_opened_between_counter_reads_still_gets_its_cross_check(fake_nvml, tmp_path: Path) -> None:
    # the counter is read once a second; a 1.3 s generation window opened 0.6 s into that schedule holds only
    # one scheduled reading, so the process reads the counter at the window's first tick as well
    nvml, gpus = open_gpus(1)
    sampler = Sampler(gpus, False, 50.0, tmp_path / "samples" / "node=n1", 5.0)
    sampler.start()
    meter = Meter(DistEnv.single(), torch.device("cpu"), None, sampler.set_windows)
    time.sleep(0.6)
    meter.begin("generation")
    time.sleep(1.3)
    meter.end("generation")
    sampler.stop()
    nvml.close()
    stats = sampler.stats["generation"][gpus[0].uuid]
    assert stats["counter_j"] is not None, stats
    assert stats["counter_j"] == pytest.approx(stats["integral_j"], rel=0.03)
    assert stats["integral_j"] == pytest.approx(100.0 * 1.0, rel=0.05)  # readings a second apart, at 100 W
    readings = read_samples(tmp_path).to_pandas().query("window == 'generation'")["energy_mj"].notna().sum()
    assert readings == 2


def test_no_timeline_at_zero_hz_but_fallback_gpus_still_integrated(fake_nvml, tmp_path: Path) -> None:
    fake_nvml.configure([{**FAKE_GPUS[0], "energy_counter": False}])
    nvml, gpus = open_gpus(1)
    sampler = Sampler(gpus, False, 0.0, tmp_path / "s", 5.0)
    assert sampler.hz == 10.0 and sampler.needed
    sampler.start()
    t0 = time.monotonic()
    e0_j = sampler.read()["gpu_j"][gpus[0].uuid]
    t1 = time.monotonic()
    time.sleep(1.0)
    t2 = time.monotonic()
    e1_j = sampler.read()["gpu_j"][gpus[0].uuid]
    t3 = time.monotonic()
    sampler.stop()
    nvml.close()
    # 100 W from power samples, integrated up to each read: the reads' span lies within these bounds however
    # late a busy machine lets the process answer
    assert 100.0 * (t2 - t1) * 0.98 <= e1_j - e0_j <= 100.0 * (t3 - t0) * 1.02
    assert not (tmp_path / "s").exists()
    assert not Sampler(gpus[:0], False, 0.0, tmp_path / "s", 5.0).needed  # nothing to poll: no process


def test_a_process_that_cannot_open_a_gpu_fails_the_start_clearly(fake_nvml, tmp_path: Path) -> None:
    nvml, gpus = open_gpus(1)
    fake_nvml.write_spec(fake_nvml.SHARED_SPEC, FAKE_GPUS[1:])  # the process's NVML has no GPU A
    with pytest.raises(SamplerError, match=r"did not start: NvmlFault: GPU 0 \(GPU-aaaaaaaa.*\): "
                                           r"nvmlDeviceGetHandleByUUID failed: NVML error 6"):
        Sampler(gpus, False, 10.0, tmp_path / "s", 5.0).start()
    nvml.close()


def test_sigkilled_process_leaves_only_readable_parts_and_a_note(fake_nvml, tmp_path: Path) -> None:
    nvml, gpus = open_gpus(3)
    out = tmp_path / "node=n1"
    sampler = Sampler(gpus, False, 200.0, out, 0.02, node_fields=FIELDS)
    sampler.start()
    sampler.set_windows(("generation",))
    deadline = time.monotonic() + 60
    while len(list(out.glob("part-*.parquet"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.137)  # somewhere in the middle of a flush, likely
    os.kill(sampler.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert sampler.read() is None  # lost: the point goes on, with nulls and a note
    sampler.stop()
    nvml.close()
    assert any("sampler process lost" in n and "exit code -9 (SIGKILL)" in n for n in sampler.notes), sampler.notes
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) >= 5
    for part in parts:  # every visible part is complete
        assert pq.read_table(part).num_rows > 0
    rows = ds.dataset(out, format="parquet").to_table()  # hidden temporaries (.part-*.tmp) are ignored
    assert rows.num_rows >= 5 * 3 and "generation" in rows.column("window").to_pylist()


PARENT_SCRIPT = """
import sys, time
from energybench.device.nvml import Nvml
from energybench.energy.sampler import Sampler
nvml = Nvml()
sampler = Sampler([nvml.gpu(info) for info in nvml.gpus()], False, 20.0, __import__("pathlib").Path(sys.argv[1]), 60.0)
sampler.start()
print(sampler.pid, flush=True)
time.sleep(600)
"""


def test_the_process_ends_with_its_parent_after_a_last_part(fake_nvml, tmp_path: Path) -> None:
    out = tmp_path / "node=n1"
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, str(out)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the sampler process outlived its parent by 10 s")
    assert pq.read_table(next(out.glob("part-*.parquet"))).num_rows >= 3  # flush_s=60: the last part, at exit


def test_the_process_ends_when_its_leader_goes_away_during_start(fake_nvml, tmp_path: Path) -> None:
    nvml, gpus = open_gpus(3)
    out = tmp_path / "node=n1"
    ours, theirs = Pipe()
    proc = subprocess.Popen([sys.executable, "-m", "energybench.energy.sampler_process", "--fd", str(theirs.fileno()),
                             "--parent", str(os.getpid())], pass_fds=[theirs.fileno()])
    theirs.close()
    ours.send(Sampler(gpus, False, 10.0, out, 60.0).config)
    ours.close()  # the leader is gone before it hears "ready"
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    nvml.close()
    assert pq.read_table(next(out.glob("part-*.parquet"))).num_rows >= 3  # its first tick, written at exit
