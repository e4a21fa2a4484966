"""An online point end to end on CPU (tiny model, fake NVML): the steady window's edges, per-request energy that
sums to the windows' energy, the run metrics, and the errors a user can cause."""

from __future__ import annotations


import pyarrow.parquet as pq
import pytest

import torch

from energybench.config import ConfigError
from energybench.point import run_point
from energybench.results.layout import point_dir
from fake_pynvml import FAKE_GPUS

ONLINE = ("engine=fast", "workload=online", "meter.gpu=nvml", "meter.sample_hz=20", "meter.idle_s=0")


@pytest.fixture
def online(quick, fake_nvml, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the rank's GPU is NVML's GPU 1, drawing 200 W
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # spinning OpenMP threads on a busy 2-core machine stall steps by 0.5 s

    def make(*overrides: str):
        cfg = quick(*ONLINE, *overrides)
        outcome = run_point(cfg)
        assert outcome.state == "done", outcome.reason
        pdir = point_dir(cfg)
        return (outcome.row, pq.read_table(pdir / "requests.parquet").to_pylist(),
                pq.read_table(pdir / "steps.parquet").to_pylist(), pdir)

    yield make
    torch.set_num_threads(threads)


def test_attributed_energy_sums_to_each_window(online) -> None:
    row, requests, steps, pdir = online("online.rate=40", "online.requests=100", "online.counter_read_s=0.05")
    assert FAKE_GPUS[1]["demand_w"] == 200.0
    assert row["energy_j"] == pytest.approx(200.0 * row["duration_s"], rel=0.03)  # the steady window's
    assert sum(r["window_energy_j"] for r in requests) == pytest.approx(row["energy_j"], rel=1e-9)
    whole = row["rampup_energy_j"] + row["energy_j"] + row["drain_energy_j"]
    assert sum(r["energy_j"] for r in requests) == pytest.approx(whole, rel=1e-9)
    assert sum(s["energy_j"] for s in steps if s["window"] == "generation") == pytest.approx(row["energy_j"], rel=1e-9)
    assert all(r["energy_j"] > 0 for r in requests)
    assert not any(r["window_energy_j"] for r in requests if r["finished_s"] < steps[0]["end_s"])
    assert row["energy_per_response_j"] == pytest.approx(
        sum(r["energy_j"] for r in requests if r["in_window"]) / row["responses"])
    gpus = pq.read_table(pdir / "gpus.parquet").to_pylist()
    assert gpus[0]["energy_j"] == pytest.approx(row["energy_j"]) and gpus[0]["prefill_energy_j"] is None


def test_the_steady_window_starts_when_the_slots_fill_or_a_request_ends_and_stops_at_the_last_arrival(online):
    row, requests, steps, _ = online("online.rate=40", "online.requests=100")
    windows = [s["window"] for s in steps]
    g0, d0 = windows.index("generation"), windows.index("drain")
    assert windows == ["rampup"] * g0 + ["generation"] * (d0 - g0) + ["drain"] * (len(steps) - d0)
    ends = {r["finished_s"] for r in requests}
    ready = [s["live"] == 4 or s["end_s"] in ends for s in steps]  # 4 slots all busy, or a request done
    first = ready.index(True)
    # the window opens at the next scheduler iteration: right after that step, or after the decode step
    # that followed its prefill step in the same iteration
    assert g0 - 1 == first or (g0 - 2 == first and steps[first]["kind"] == "prefill"
                               and steps[g0 - 1]["kind"] == "decode")
    last = max(r["arrival_s"] for r in requests)
    assert steps[d0 - 3]["end_s"] < last <= steps[d0]["end_s"] - steps[d0]["duration_s"]
    start = steps[g0]["end_s"] - steps[g0]["duration_s"]
    assert [r["in_window"] for r in requests] == [start <= r["arrival_s"] <= last for r in requests]
    assert row["duration_s"] == pytest.approx(sum(s["duration_s"] for s in steps[g0:d0]), abs=0.01)


def test_online_run_metrics(online) -> None:
    # arrivals over ~0.8 s: the 4 slots fill long before the last one, however busy the machine (at 200/s all
    # 40 could arrive before a loaded CPU had filled the slots: no steady state to measure)
    row, requests, steps, _ = online("online.rate=50", "online.requests=40", "online.slo_ttft_s=0.05")
    mine = [r for r in requests if r["in_window"]]
    assert row["workload"] == "online" and row["rate_rps"] == 50 and row["requests"] == 40
    assert row["torch_threads"] >= 1  # sized and recorded as for an offline point
    assert row["decode_attention"] == "mask"  # the fast engine's attention on a CPU, recorded
    assert row["top_p_kernel"] == False  # noqa: E712  the sort's draw on a CPU
    assert row["pdl"] == False  # noqa: E712  no dependent launches off the GPU
    assert row["blas"] is None and row["compile_prefill"] == False  # noqa: E712  PyTorch's BLAS; eager prefill
    assert row["kv_together"] == False  # noqa: E712  no split kernel off the GPU
    assert row["skinny"] == False  # noqa: E712  nor the batch 2-16 GEMM
    assert row["defer_residual"] == False  # noqa: E712  the `fast` engine's layers add their own residuals
    assert row["responses"] == len(mine) > 0
    window = [s for s in steps if s["window"] == "generation"]
    assert row["tokens"] == sum(s["new_tokens"] for s in window)
    assert row["tokens_per_s"] == pytest.approx(row["tokens"] / row["duration_s"])
    assert row["energy_per_token_j"] == pytest.approx(row["energy_j"] / row["tokens"])
    ttfts = sorted(r["ttft_s"] for r in mine)
    assert ttfts[0] <= row["ttft_p50_s"] <= row["ttft_p90_s"] <= row["ttft_p99_s"] <= ttfts[-1]
    assert row["latency_p99_s"] >= row["ttft_p99_s"]
    met = [r["ttft_s"] <= 0.05 and (r["tpot_s"] is None or r["tpot_s"] <= 0.1) for r in mine]
    assert [r["slo_met"] for r in mine] == met
    assert row["slo_attainment"] == pytest.approx(sum(met) / len(mine))
    # finished in the window = finished by one of its steps (a request ends at the end of the step that sampled
    # its last token). The window's edges are clock reads between steps, which steps.parquet does not keep:
    # rebuilding them from a step's start shifted the window by the loop's overhead (CI: one request too few).
    ends = {s["end_s"] for s in window}
    finished = [r for r in requests if r["finished_s"] in ends]
    assert row["achieved_rate_rps"] == pytest.approx(len(finished) / row["duration_s"])
    assert row["goodput_rps"] == pytest.approx(sum(r["slo_met"] for r in finished) / row["duration_s"])
    assert row["goodput_rps"] <= row["achieved_rate_rps"]
    assert 1 <= row["mean_live"] <= 4  # at most the 4 slots
    for r in requests:
        assert r["queue_s"] == pytest.approx(r["admitted_s"] - r["arrival_s"])
        assert r["latency_s"] == pytest.approx(r["finished_s"] - r["arrival_s"])


def test_too_few_requests_for_a_steady_state_fail_the_point_with_the_fix(quick, fake_nvml) -> None:
    cfg = quick(*ONLINE[:2], "online.rate=1000", "online.requests=2", "meter.gpu=none")  # 2 requests, 4 slots
    outcome = run_point(cfg)
    assert outcome.state == "failed" and "send more requests" in outcome.reason


@pytest.mark.parametrize("overrides, message", [
    (("workload=online", "online.rate=4"), "engine=reference cannot run workload=online: Meta's static loop"),
    (("workload=online", "engine=fast"), "workload=online needs online.rate="),
    (("workload=online", "engine=fast", "online.rate=4", "online.duration_s=null"), "online.requests=<n> or"),
    (("online.burstiness=0",), "online.burstiness=0.0: must be > 0"),
    (("workload=batch",), "workload='batch': must be one of offline, online"),
])
def test_bad_online_settings_are_one_line_errors(quick, overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        quick(*overrides)
    assert "\n" not in str(e.value)
