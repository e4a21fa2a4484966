"""Figures of online points: energy per token and p99 TPOT against request rate, live sequences against power."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

import energybench.results as results
from energybench.analysis.grid import done, message_figure, new_figure, value_label
from energybench.analysis.render import Block
from energybench.results.online import steps as read_steps

LINE_KEYS = ("model", "engine", "power_cap_w")  # one line per model / engine / cap
NO_ONLINE = "no online points (workload=online) in these sweeps"
WINDOW_COLOURS = {"rampup": "#f3e3a0", "generation": "#b9d4ee", "drain": "0.88"}
TIMELINES = 4


def online_points(points: pd.DataFrame) -> pd.DataFrame:
    d = done(points)
    return d[d["workload"] == "online"] if "workload" in d else d.iloc[0:0]


TABLE = ("rate_rps", "achieved_rate_rps", "mean_live", "tokens_per_s", "energy_per_token_j", "energy_per_response_j",
         "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "latency_p99_s", "goodput_rps", "slo_attainment")


def online_table(points: pd.DataFrame) -> pd.DataFrame:
    """One row per online point (steady window): offered and achieved rate, load, J/token, J/request, latencies."""
    d = online_points(points)
    keys = [k for k in LINE_KEYS if k in d and d[k].nunique(dropna=False) > 1]
    return d[keys + [c for c in TABLE if c in d]].sort_values(keys + ["rate_rps"]).reset_index(drop=True)


def load_curves(points: pd.DataFrame) -> Figure:
    """J/token and p99 TPOT (steady window) against the offered request rate, one line per model/engine/cap."""
    title = "Online: energy per token and p99 TPOT against request rate"
    d = online_points(points)
    if d.empty:
        return message_figure(title, NO_ONLINE)
    fig, axes = new_figure(2, 5.0, 3.6)
    fig.suptitle(title)
    panels = (("energy_per_token_j", "energy per token, J"), ("tpot_p99_s", "p99 time per output token, s"))
    for ax, (metric, label) in zip(axes, panels):
        for key, rows in d.groupby([k for k in LINE_KEYS], dropna=False, sort=True):
            rows = rows.groupby("rate_rps", as_index=False)[metric].mean().sort_values("rate_rps")
            name = " ".join(value_label(k, v) for k, v in zip(LINE_KEYS, key))
            ax.plot(rows["rate_rps"], rows[metric], marker="o", label=name)
        ax.set_xlabel("offered request rate, requests/s")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if d["energy_per_token_j"].isna().all():
        fig.notes.append("no energy measured in these points (CPU run or no GPU meter)")
    return fig


def live_timeline(steps: pd.DataFrame, samples: pd.DataFrame, point_ids: list[str]) -> Figure:
    """Per point: sequences holding a slot (steps) and the power of all its GPUs (sampler) over time,
    background shaded by window (ramp-up, steady, drain)."""
    title = "Online: live sequences and power over time"
    if steps.empty:
        return message_figure(title, NO_ONLINE)
    fig, axes = new_figure(len(point_ids), 6.0, 3.4)
    fig.suptitle(title)
    for ax, pid in zip(axes, point_ids):
        s = steps[steps["point_id"].astype(str) == pid]
        s = s[s["attempt"] == s["attempt"].max()].sort_values("step_index")
        t0 = s["started_at"].min()
        x = (s["started_at"] - t0).dt.total_seconds()
        for window, colour in WINDOW_COLOURS.items():
            w = x[s["window"].astype(str) == window]
            if len(w):
                ax.axvspan(w.min(), w.max(), color=colour, lw=0, zorder=0)
        ax.step(x, s["live"], where="post", color="C0", lw=0.8)
        ax.set_ylabel("live sequences", color="C0")
        ax.set_xlabel("seconds since serving started")
        ax.set_title(pid, fontsize=8)
        p = samples[samples["point_id"].astype(str) == pid] if len(samples) else samples
        if len(p) and "power_w" in p and p["power_w"].notna().any():
            p = p[(p["timestamp"] >= t0)].groupby("timestamp", as_index=False)["power_w"].sum()
            twin = ax.twinx()
            twin.plot((p["timestamp"] - t0).dt.total_seconds(), p["power_w"], color="C3", lw=0.8)
            twin.set_ylabel("power, W (all GPUs)", color="C3")
        else:
            fig.notes.append(f"{pid}: no power samples (no GPU meter or meter.sample_hz=0)")
    return fig


def report_blocks(points: pd.DataFrame, fig_dir: Path, dpi: int) -> list[Block]:
    """The report's online section (nothing when the sweeps hold no online point)."""
    d = online_points(points)
    if d.empty:
        return []
    blocks = [Block("h2", "Online serving (workload=online)"),
              Block("p", "Steady window only (ramp-up and drain excluded); energy per request is each request's "
                         "attributed share (docs/methodology.md).")]
    blocks.append(Block("table", frame=online_table(points)))
    dirs = [Path(p) for p in d.sort_values("rate_rps")["point_dir"]]
    chosen = dirs if len(dirs) <= TIMELINES else [dirs[round(i * (len(dirs) - 1) / (TIMELINES - 1))]
                                                  for i in range(TIMELINES)]
    ids = [p.name.removeprefix("point=") for p in chosen]
    samples = results.gpu_samples(*chosen, columns=("power_w", "timestamp")) if chosen else pd.DataFrame()
    figures = (("online_load", load_curves(points),
                "Left: J per generated token over the steady window against the offered rate; right: p99 of the "
                "requests' time per output token. Saturation: where J/token stops falling and p99 TPOT climbs."),
               ("online_timeline", live_timeline(read_steps(*chosen), samples, ids),
                "Sequences holding a KV-cache slot (blue, per engine step) and the power of all GPUs of the point "
                "(red, sampler). Shading: ramp-up (yellow), steady window (blue), drain (grey)."))
    for name, fig, how in figures:
        blocks.append(Block("h3", fig.get_suptitle() or name))
        if fig.empty:
            blocks.append(Block("p", f"Not drawn: {fig.notes[0]}."))
            continue
        fig.savefig(fig_dir / f"{name}.png", dpi=dpi)
        blocks += [Block("img", name, path=f"figures/{name}.png"), Block("p", how)]
        blocks += [Block("p", f"Note: {n}.") for n in fig.notes]
    return blocks
