"""GPU energy from NVML counters at window edges, the job's GPUs found by UUID, and every fault flagged (fake NVML)."""

from __future__ import annotations

import pytest
import torch

from fake_pynvml import FAKE_GPUS
from energybench.distributed import DistEnv, RankError
from energybench.energy.counters import NodeCounters
from energybench.device.gpus import Claim, GpuNotFound, job_gpus, node_gpus, rank_claim, resolve
from energybench.energy.meter import Meter
from energybench.device.nvml import Nvml, NvmlUnavailable

CPU = torch.device("cpu")
A, B, C = (g["uuid"] for g in FAKE_GPUS)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def env(local_rank: int = 0, local_world: int = 1) -> DistEnv:
    return DistEnv(local_rank, local_world, local_rank, local_world, 0, 1, "127.0.0.1", 0, "node1")


def test_window_energy_is_the_counter_delta(fake_nvml) -> None:
    clock = Clock()
    fake_nvml.configure(FAKE_GPUS, clock=clock)
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()[:2]]
    meter = Meter(env(), CPU, NodeCounters("node1", gpus, None))
    meter.begin("generation")
    clock.t += 2.0
    fake_nvml.set_demand(B, 50.0)  # B drew 200 W for 2 s, then 50 W
    clock.t += 4.0
    reading = meter.end("generation")
    assert reading is not None
    assert reading.energy_j == pytest.approx({A: 100 * 6, B: 200 * 2 + 50 * 4}, abs=1e-3)  # mJ resolution
    assert reading.total_energy_j == pytest.approx(600 + 600, abs=2e-3)
    assert reading.cpu_energy_j is None  # no RAPL: not measured, not 0
    nvml.close()


def test_prefill_and_decode_share_their_edge(fake_nvml) -> None:
    clock = Clock()
    fake_nvml.configure(FAKE_GPUS, clock=clock)
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()]
    meter = Meter(env(), CPU, NodeCounters("node1", gpus, None))
    hooks = meter.phase_hooks("batch0")
    reads = len(fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption"))
    hooks.phase_start("prefill")
    clock.t += 1
    hooks.phase_end("prefill")
    hooks.phase_start("decode")  # the same instant: no second read
    clock.t += 3
    hooks.phase_end("decode")
    assert len(fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption")) - reads == 3 * len(gpus)
    prefill, decode = hooks.readings["prefill"], hooks.readings["decode"]
    assert prefill.energy_j[A] == pytest.approx(100, abs=1e-3) and decode.energy_j[A] == pytest.approx(300, abs=1e-3)
    nvml.close()


def test_a_batch_gathers_its_prefill_and_decode_readings_once_after_decode_ends(fake_nvml, monkeypatch) -> None:
    """On several ranks a reading is a collective; prefill's must not run inside decode's window, which
    starts at the very edge prefill ended on."""
    import energybench.energy.meter as meter_module

    clock = Clock()
    fake_nvml.configure(FAKE_GPUS, clock=clock)
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()]
    two_ranks = DistEnv(0, 2, 0, 2, 0, 1, "127.0.0.1", 0, "node1")  # rank 0 of 2 on one node
    meter = Meter(two_ranks, CPU, NodeCounters("node1", gpus, None))
    gathered: list[tuple[tuple[str, ...], object]] = []

    def gather(env, obj):  # what rank 1 (no counters: not the node leader's GPUs) would add
        gathered.append((tuple(meter._open), obj))
        return [obj, [{} for _ in obj]]

    monkeypatch.setattr(meter_module, "gather", gather)
    monkeypatch.setattr(meter_module.dist, "barrier", lambda: None)
    hooks = meter.phase_hooks("batch0")
    hooks.phase_start("prefill")
    clock.t += 1
    hooks.phase_end("prefill")
    hooks.phase_start("decode")
    clock.t += 3
    hooks.phase_end("decode")
    assert len(gathered) == 1 and gathered[0][0] == ()  # one collective, with no window open
    prefill, decode = hooks.readings["prefill"], hooks.readings["decode"]
    assert prefill.energy_j[A] == pytest.approx(100, abs=1e-3) and decode.energy_j[A] == pytest.approx(300, abs=1e-3)
    assert [r.name for r in meter.readings] == ["batch0/prefill", "batch0/decode"]
    nvml.close()


def test_a_cap_lowers_the_energy_the_fake_counts(fake_nvml) -> None:
    clock = Clock()
    fake_nvml.configure(FAKE_GPUS, clock=clock)
    nvml = Nvml()
    gpu = nvml.gpu(nvml.gpus()[2])  # demands 300 W
    gpu.set_limit_w(250)
    e0 = gpu.energy_mj()
    clock.t += 10
    assert gpu.energy_mj() - e0 == 250 * 10 * 1000
    nvml.close()


def test_counter_going_backwards_gives_null_and_a_note(fake_nvml) -> None:
    clock = Clock()
    fake_nvml.configure(FAKE_GPUS, clock=clock)
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()[:2]]
    counters = NodeCounters("node1", gpus, None)
    meter = Meter(env(), CPU, counters)
    meter.begin("w")
    clock.t += 1
    fake_nvml.reset_energy(A)  # driver reload
    clock.t += 1
    reading = meter.end("w")
    assert reading.energy_j[A] is None and reading.energy_j[B] == pytest.approx(400, abs=1e-3)
    assert reading.total_energy_j is None  # never a partial sum passed off as the total
    assert any("went backwards" in n and A in n for n in counters.notes)
    meter.begin("after")  # a window inside the new epoch is fine again
    clock.t += 1
    assert meter.end("after").energy_j[A] == pytest.approx(100, abs=1e-3)
    nvml.close()


def test_gpu_without_energy_counter_falls_back_to_the_power_integral(fake_nvml) -> None:
    fake_nvml.configure([{**FAKE_GPUS[0], "energy_counter": False}])
    nvml = Nvml()
    gpu = nvml.gpu(nvml.gpus()[0])
    assert not gpu.has_energy_counter
    counters = NodeCounters("node1", [gpu], None, sampled=lambda: {"gpu_j": {A: 42.0}})  # the sampler's integral
    assert counters.read()[f"gpu:{A}"].value_j == 42.0
    assert NodeCounters("node1", [gpu], None, sampled=lambda: None).read()[f"gpu:{A}"] is None  # sampler lost
    nvml.close()


@pytest.mark.parametrize(("visible", "expected"), [
    ("2,0", [C, A]),
    (f"{C},{A}", [C, A]),
    ("GPU-cccccccc,GPU-aaaaaaaa", [C, A]),  # unique prefixes, as CUDA accepts them
    (f"{C}", [C, C]),  # one GPU visible: both ranks use it
])
def test_cuda_visible_devices_map_to_the_right_gpus(fake_nvml, visible: str, expected: list[str]) -> None:
    nvml = Nvml()
    seen = nvml.gpus()
    claims = [rank_claim(env(r, 2), CPU, {"CUDA_VISIBLE_DEVICES": visible}) for r in range(2)]
    assert [resolve(c, seen).uuid for c in claims] == expected
    assert [g.uuid for g in node_gpus(claims, 0, seen)] == sorted(set(expected))  # each GPU once, NVML order
    nvml.close()


def test_torch_uuid_without_prefix_matches_nvml(fake_nvml) -> None:
    nvml = Nvml()
    claim = Claim(0, 0, uuid=B.removeprefix("GPU-").upper())
    assert resolve(claim, nvml.gpus()).uuid == B
    with pytest.raises(GpuNotFound, match="matches 0 of the GPUs"):
        resolve(Claim(0, 0, uuid="deadbeef-0000"), nvml.gpus())
    with pytest.raises(GpuNotFound, match="index 7, but NVML sees 3 GPUs"):
        resolve(Claim(0, 0, visible="7"), nvml.gpus())
    nvml.close()


def test_meter_gpu_nvml_without_nvml_fails_clearly(fake_nvml) -> None:
    fake_nvml.configure(FAKE_GPUS, library_missing=True)
    with pytest.raises(NvmlUnavailable, match="NVML did not initialize: NVML Shared Library Not Found"):
        Nvml()
    with pytest.raises(RankError, match="meter.gpu=nvml needs NVML"):
        with job_gpus("nvml", None, env(), CPU):
            pass


def test_meter_gpu_auto_on_cpu_opens_nothing(fake_nvml) -> None:
    with job_gpus("auto", None, env(), CPU) as node:
        assert node.gpus == [] and not node.meter
    assert fake_nvml.calls("nvmlInit") == []


def test_meter_gpu_nvml_on_cpu_ranks_meters_the_visible_gpu(fake_nvml, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with job_gpus("nvml", None, env(), CPU) as node:
        assert [g.uuid for g in node.gpus] == [B] and node.meter
    assert fake_nvml.calls("nvmlShutdown")  # closed on exit


def test_switch_closes_and_opens_windows_at_one_edge(fake_nvml) -> None:
    """Meter.switch: one counter read, the sampler told the new windows once, the closed window's reading
    delivered with the next end (online points switch rampup -> generation -> drain this way)."""
    clock = Clock()
    fake_nvml.configure(FAKE_GPUS, clock=clock)
    nvml = Nvml()
    gpus = [nvml.gpu(info) for info in nvml.gpus()]
    told: list[tuple[str, ...]] = []
    meter = Meter(env(), CPU, NodeCounters("node1", gpus, None), told.append)
    meter.begin("outer")
    meter.begin("rampup")
    clock.t += 2
    reads = len(fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption"))
    told.clear()
    meter.switch("rampup", "steady")
    assert len(fake_nvml.calls("nvmlDeviceGetTotalEnergyConsumption")) - reads == len(gpus)  # one edge
    assert told == [("outer", "steady")] and meter.readings == []  # rampup's reading waits for the next end
    clock.t += 5
    steady = meter.end("steady")
    assert steady is not None and [r.name for r in meter.readings] == ["rampup", "steady"]
    rampup = meter.readings[0]
    assert rampup.energy_j[A] == pytest.approx(200, abs=1e-3) and steady.energy_j[A] == pytest.approx(500, abs=1e-3)
    outer = meter.end("outer")
    assert outer is not None and outer.energy_j[A] == pytest.approx(rampup.energy_j[A] + steady.energy_j[A], abs=1e-3)
    nvml.close()
