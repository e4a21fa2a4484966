"""Every figure and table of energybench.analysis on frames made by a real tiny sweep."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import energybench.analysis as analysis
import energybench.results as results
from energybench.analysis.grid import NO_ENERGY

ENERGY_FIGURES = {"fig3_energy_per_second", "fig4_5_power_shards_batch", "fig6_7_energy_per_token",
                  "fig8_9_energy_per_response", "energy_split", "gross_vs_net", "pareto"}


def drawn(fig: Figure) -> int:
    """How many data artists (lines with points, bars) the figure holds."""
    n = 0
    for ax in fig.axes:
        n += sum(1 for line in ax.get_lines() if len(line.get_xdata()) > 0)
        n += sum(1 for p in ax.patches if p.get_height() > 0 and p.get_width() > 0)
    return n


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    return buf.getvalue()


@pytest.fixture(scope="module")
def energy_points(energy_sweep: Path) -> pd.DataFrame:
    return results.points(energy_sweep)


@pytest.fixture(scope="module")
def energy_samples(energy_sweep: Path) -> pd.DataFrame:
    return results.gpu_samples(energy_sweep)


@pytest.mark.parametrize("spec", analysis.FIGURES, ids=lambda s: s.name)
def test_every_figure_draws_from_a_sweep_with_energy(spec, energy_points, energy_samples) -> None:
    fig = spec.draw(energy_samples if spec.input == "samples" else energy_points)
    assert isinstance(fig, Figure)
    if spec.name == "power_cap_effect":  # the sweep did not vary the cap: the figure says so
        assert fig.empty and "power_cap was not varied" in fig.notes[0]
        return
    assert not fig.empty and drawn(fig) > 0
    assert png(fig)[:4] == b"\x89PNG"


@pytest.mark.parametrize("spec", analysis.FIGURES, ids=lambda s: s.name)
def test_without_energy_figures_say_so_instead_of_drawing_zeros(spec, cpu_sweep: Path) -> None:
    points = results.points(cpu_sweep)
    fig = spec.draw(results.gpu_samples(cpu_sweep) if spec.input == "samples" else points)
    if spec.name == "fig2_tokens_per_s":
        assert not fig.empty and drawn(fig) > 0
        return
    assert fig.empty and drawn(fig) == 0
    if spec.name in ENERGY_FIGURES:
        assert fig.notes == [NO_ENERGY]
    assert png(fig)[:4] == b"\x89PNG"


def test_figures_follow_what_the_sweep_varied(energy_points: pd.DataFrame) -> None:
    done = energy_points[energy_points["status"] == "done"]
    fig = analysis.tokens_per_s_by_model(done)
    (ax,) = fig.axes  # batch x max_tokens: one panel, batch on x, a line per max_tokens
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"] and len(ax.get_lines()) == 2
    assert "drawn against batch" in fig.notes[0]
    # one more axis (two datasets): a panel per dataset
    other = done.assign(dataset="synthetic-gsm8k", tokens_per_s=done["tokens_per_s"] * 2)
    fig = analysis.energy_per_token_by_shards_tokens(pd.concat([done, other]), x="batch", hue=["max_tokens"])
    assert sorted(ax.get_title() for ax in fig.axes) == ["dataset=synthetic-alpaca", "dataset=synthetic-gsm8k"]
    # replicates (another seed) are averaged, with their spread as an error bar
    seeds = pd.concat([done, done.assign(seed=2, tokens_per_s=done["tokens_per_s"] * 3)])
    ax = analysis.tokens_per_s_by_model(seeds, x="batch", hue=["max_tokens"]).axes[0]
    means = {tuple(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() != "None"}
    expected = seeds.groupby(["max_tokens", "batch"])["tokens_per_s"].mean()
    assert means >= {tuple(expected.loc[t].to_numpy()) for t in (2, 4)}


def test_a_single_point_draws_every_figure_or_says_why(energy_points, energy_samples) -> None:
    one = energy_points[energy_points["status"] == "done"].head(1)
    for spec in analysis.FIGURES:
        fig = spec.draw(energy_samples.head(50) if spec.input == "samples" else one)
        assert fig.empty or drawn(fig) > 0, spec.name


def test_power_cap_table_compares_each_cap_with_the_highest(energy_points: pd.DataFrame) -> None:
    done = energy_points[energy_points["status"] == "done"]
    caps = []
    for cap, slow, joules in ((None, 1.0, 1.0), (250.0, 1.05, 0.9), (175.0, 1.1, 0.75)):
        caps.append(done.assign(power_cap_w=cap, duration_s=done["duration_s"] * slow,
                                tokens_per_s=done["tokens_per_s"] / slow, energy_j=done["energy_j"] * joules,
                                energy_per_token_j=done["energy_per_token_j"] * joules))
    table = analysis.power_cap_table(pd.concat(caps))
    assert len(table) == 3 * 4  # every cap of every (batch, max_tokens)
    order = table.groupby(["batch", "max_tokens"])["power_cap"].apply(list).tolist()
    assert order == [["700 W (as found)", "250 W", "175 W"]] * 4  # the uncapped point's enforced limit
    at_175 = table[table["power_cap"] == "175 W"]
    assert at_175["duration_s_change_pct"].to_numpy() == pytest.approx(10.0)
    assert at_175["energy_j_change_pct"].to_numpy() == pytest.approx(-25.0)
    assert at_175["tokens_per_s_change_pct"].to_numpy() == pytest.approx(100 * (1 / 1.1 - 1))
    assert (table[table["power_cap"] == "700 W (as found)"]["energy_j_change_pct"] == 0).all()
    unrecorded = analysis.power_cap_table(pd.concat(caps).assign(enforced_limit_w=np.nan))
    assert set(unrecorded["reference_cap"]) == {"limit as found"}
    fig = analysis.power_cap_effect(pd.concat(caps))
    assert not fig.empty and len(fig.axes) == 4 and drawn(fig) > 0


def test_utilization_memory_and_efficiency_tables(energy_points: pd.DataFrame, cpu_sweep: Path) -> None:
    util = analysis.utilization_table(energy_points)
    assert list(util.columns) == ["batch=1", "batch=2"] and list(util.index) == [2, 4]
    assert np.allclose(util.to_numpy(), 85.0)
    assert np.allclose(analysis.memory_table(energy_points).to_numpy(), 0.4)
    eff = analysis.efficiency_table(energy_points)
    assert len(eff) == 4 and (eff["roofline_frac"] < 1).all() and "note" not in eff.attrs
    cpu = results.points(cpu_sweep)
    assert "no GPU utilization" in analysis.utilization_table(cpu).attrs["note"]
    assert "no known GPU" in analysis.efficiency_table(cpu).attrs["note"]
    status = analysis.status_table(cpu)
    assert sorted(status["status"]) == ["failed", "interrupted"]


def _window_runs(rows: pd.DataFrame) -> int:
    """Runs of consecutive ticks (first GPU, in time order) in the same window of a shaded kind."""
    from energybench.analysis.extra import _kind

    first = rows[rows["gpu_uuid"] == rows["gpu_uuid"].iloc[0]].sort_values("elapsed_s")
    w = first["window"].astype(object).fillna("").astype(str).tolist()
    return sum(1 for i, name in enumerate(w) if _kind(name) and (i == 0 or w[i - 1] != name))


def test_power_timeline_has_a_line_per_gpu_and_shaded_windows(energy_samples: pd.DataFrame) -> None:
    one = energy_samples["point_id"].astype(str).iloc[0]
    fig = analysis.power_timeline(energy_samples, points=[one])
    (ax,) = fig.axes
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    rows = energy_samples[energy_samples["point_id"] == one]
    assert len(lines) == 1 and sorted(lines[0].get_ydata()) == pytest.approx(sorted(rows["power_w"]))
    # one shaded span per run of ticks in one window (idle, warm-up, prefill/decode); how many windows a
    # 10 Hz sampler catches in tiny CPU batches depends on the machine's speed, so count them in the rows
    assert len(ax.patches) == _window_runs(rows) >= 1
    assert analysis.power_timeline(energy_samples, points=["nope"]).empty
    # ticks outside every window (before the idle baseline, after the last batch) carry a null window
    outside = rows.assign(window=rows["window"].astype(object).where(rows["elapsed_s"] > rows["elapsed_s"].min()))
    assert outside["window"].isna().sum() >= 1
    fig = analysis.power_timeline(outside)
    assert not fig.empty and len(fig.axes[0].patches) == _window_runs(outside) >= 1
    requeued = pd.concat([rows.assign(attempt=1), rows.assign(attempt=2, elapsed_s=rows["elapsed_s"] + 100)])
    fig = analysis.power_timeline(requeued)
    (line,) = [line for line in fig.axes[0].get_lines() if len(line.get_xdata())]
    assert len(line.get_xdata()) == len(rows) and min(line.get_xdata()) == 0 and "the last is drawn" in fig.notes[0]


def test_utilization_timeline_draws_the_sampled_utilization(energy_samples: pd.DataFrame) -> None:
    one = energy_samples["point_id"].astype(str).iloc[0]
    fig = analysis.utilization_timeline(energy_samples, points=[one])
    (ax,) = fig.axes
    rows = energy_samples[energy_samples["point_id"].astype(str) == one]
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    assert len(lines) == rows["gpu_uuid"].nunique()
    assert set(np.concatenate([line.get_ydata() for line in lines])) == set(rows["gpu_util_pct"])
    assert "utilization" in ax.get_ylabel()
    assert analysis.utilization_timeline(energy_samples.assign(gpu_util_pct=np.nan)).empty


def test_pareto_figure_draws_the_front_and_marks_the_recommendation(tmp_path: Path) -> None:
    from .synthetic_points import Spec, write_sweep

    sweep = write_sweep([Spec(16, 1, 0.6, 0.020, 500), Spec(64, 1, 0.35, 0.025, 1000),
                         Spec(128, 1, 0.25, 0.030, 1400), Spec(64, 2, 0.62, 0.024, 1500)], tmp_path)
    fig = analysis.pareto_figure(results.points(sweep), results.batches(sweep), n=100)
    tpot_ax, tps_ax = fig.axes
    front = next(line for line in tpot_ax.get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [0.020, 0.025, 0.030]  # b64 s2 is dominated on energy vs TPOT
    labels = tpot_ax.get_legend_handles_labels()[1]
    assert "recommended" in labels and "paper default" in labels
    star = next(c for c in tpot_ax.collections if c.get_label() == "recommended")
    assert tuple(star.get_offsets()[0]) == pytest.approx((0.030, 0.25))
    front = next(line for line in tps_ax.get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == [1400, 1500]
