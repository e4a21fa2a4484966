"""Derived metrics: the HBM roofline of decode, the J/token floor, and the known-card table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import energybench.results as results
from energybench.config import ModelConfig
from energybench.device.cards import card_for
from energybench.results.metrics import kv_bytes_per_token, roofline_tokens_per_s, weight_bytes_per_step

from .energy_fixture import IDLE_W

LLAMA_7B = ModelConfig(name="7b", dim=4096, n_layers=32, n_heads=32)


@pytest.mark.parametrize(("batch", "expected"), [(1, 251), (64, 10_267)])
def test_roofline_reproduces_the_engine_issue_for_llama_7b_on_h100(batch: int, expected: float) -> None:
    """Issue 3 states the H100 7B roofline: 251 tokens/s at batch 1, 10,267 at 64 (prompt 100 + 128 new)."""
    card = card_for("NVIDIA H100 80GB HBM3")
    weights = weight_bytes_per_step(LLAMA_7B.dim, LLAMA_7B.n_layers, LLAMA_7B.hidden_dim, LLAMA_7B.vocab_size, 2)
    kv = kv_bytes_per_token(LLAMA_7B.dim, LLAMA_7B.n_layers, 2)
    tokens_per_s = roofline_tokens_per_s(card.mem_bandwidth_gb_s, 1, batch, weights, kv, 100 + 128)
    assert tokens_per_s == pytest.approx(expected, rel=1e-3)  # 10,275 against the issue's 10,267
    assert weights == pytest.approx(13.2e9, rel=0.01) and kv == 2 * 32 * 4096 * 2


def test_roofline_scales_with_shards_and_falls_with_context() -> None:
    weights, kv = weight_bytes_per_step(4096, 32, 11008, 32000, 2), kv_bytes_per_token(4096, 32, 2)
    one = roofline_tokens_per_s(2039, 1, 16, weights, kv, 228)
    assert roofline_tokens_per_s(2039, 4, 16, weights, kv, 228) == pytest.approx(4 * one)
    assert roofline_tokens_per_s(2039, 1, 16, weights, kv, 2048) < one


@pytest.mark.parametrize(("name", "card", "bandwidth", "tdp"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM5 80GB", 3350, 700),
    ("NVIDIA H100 PCIe", "H100 PCIe 80GB", 2000, 350),
    ("NVIDIA H200", "H200 SXM 141GB", 4800, 700),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB", 2039, 400),
    ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB", 1555, 400),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB", 1935, 300),
    ("Tesla V100-SXM2-32GB", "V100 SXM2 32GB", 900, 300),
    ("Tesla V100-PCIE-32GB", "V100 PCIe 32GB", 900, 250),
    ("A100-80GB", "A100 SXM4 80GB", 2039, 400),  # a cluster preset's gpu_type
])
def test_known_cards_from_nvml_names(name: str, card: str, bandwidth: float, tdp: float) -> None:
    found = card_for(name)
    assert found is not None and (found.name, found.mem_bandwidth_gb_s, found.tdp_w) == (card, bandwidth, tdp)


@pytest.mark.parametrize("name", [None, "", "cpu", "AMD Instinct MI250X"])
def test_unknown_cards_have_no_roofline(name: str | None) -> None:
    assert card_for(name) is None


def test_derived_columns_follow_their_definitions(energy_sweep: Path) -> None:
    done = results.points(energy_sweep).query("status == 'done'")
    assert (done["card"] == "H100 SXM5 80GB").all()
    frac = done["tokens_per_s"] / done["roofline_tokens_per_s"]
    assert done["roofline_frac"].to_numpy() == pytest.approx(frac.to_numpy())
    floor = IDLE_W / done["roofline_tokens_per_s"]
    assert done["energy_floor_per_token_j"].to_numpy() == pytest.approx(floor.to_numpy())
    assert (done["energy_over_floor"] > 1).all()  # no point beats the floor
    net = (done["energy_j"] - done["idle_power_w"] * done["duration_s"]) / done["tokens"]
    assert done["net_energy_per_token_j"].to_numpy() == pytest.approx(net.to_numpy())
    split = done["prefill_energy_per_token_j"] + done["decode_energy_per_token_j"]
    assert (split <= done["energy_per_token_j"] + 1e-9).all()  # gaps between batches are in energy_j only
    assert done["tdp_frac"].to_numpy() == pytest.approx((done["power_w"] / 700).to_numpy())


def test_carbon_and_cost_from_the_points_config_and_from_factors_given_later(tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    import yaml

    from energybench.results.metrics import carbon_cost

    from .synthetic_points import Spec, write_point

    d = write_point(Spec(64, 1, 0.5), tmp_path)
    raw = yaml.safe_load((d / "config.yaml").read_text())
    raw.update(carbon={"intensity_g_per_kwh": 400.0, "pue": 1.2}, cost={"usd_per_kwh": 0.1})
    (d / "config.yaml").write_text(yaml.safe_dump(raw))
    p = results.points(d).iloc[0]
    kwh = p["energy_j"] / 3.6e6
    assert p["co2_g"] == pytest.approx(kwh * 1.2 * 400) and p["cost_usd"] == pytest.approx(kwh * 1.2 * 0.1)
    assert p["co2_per_token_g"] == pytest.approx(p["co2_g"] / p["tokens"])
    assert p["cost_per_mtoken_usd"] == pytest.approx(0.5 / 3.6e6 * 1.2 * 0.1 * 1e6)
    assert pd.isna(p["total_energy_j"]) and pd.isna(p["co2_total_g"])  # no RAPL: no total, never GPU-only as total

    t = pq.read_table(d / "run.parquet")
    run = {**t.to_pylist()[0], "cpu_energy_j": 1000.0, "dram_energy_j": 200.0}  # RAPL read both domains
    pq.write_table(t.from_pylist([run], t.schema), d / "run.parquet")
    site = carbon_cost(results.points(d), intensity_g_per_kwh=50.0, usd_per_kwh=0.3).iloc[0]  # pue stays 1.2
    total = site["energy_j"] + 1200.0
    assert site["total_energy_j"] == pytest.approx(total)
    assert site["co2_total_g"] == pytest.approx(total / 3.6e6 * 1.2 * 50)
    assert site["cost_total_per_mtoken_usd"] == pytest.approx(total / 3.6e6 * 1.2 * 0.3 / site["tokens"] * 1e6)
    assert site["co2_g"] == pytest.approx(kwh * 1.2 * 50)


def test_without_factors_the_pue_is_one_and_carbon_and_cost_are_null(energy_sweep: Path) -> None:
    p = analysis_done(results.points(energy_sweep))
    assert (p["pue"] == 1.0).all() and p["co2_g"].isna().all() and p["cost_usd"].isna().all()
    assert p["energy_j"].notna().all()


def analysis_done(points: pd.DataFrame) -> pd.DataFrame:
    return points[points["status"] == "done"]
