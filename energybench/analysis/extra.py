"""Figures the paper lacked: per-GPU power timelines, prefill/decode split, gross vs idle-subtracted energy,
efficiency against the HBM roofline and the J/token floor, and the power-cap effect (Table III drawn)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from energybench.analysis.grid import (LABELS, add_note, done, message_figure, new_figure, point_label,
                                       varied, why_missing)
from energybench.analysis.tables import CAP_METRICS, power_cap_table

MAX_BARS = 40
WINDOW_COLOURS = {"idle": "0.85", "warmup": "#f3e3a0", "prefill": "#f6b47a", "decode": "#b9d4ee"}
NO_SAMPLES = ("no per-GPU samples in these points: the sampler writes samples/node=<host>/ only with a GPU "
              "meter and meter.sample_hz > 0")


def _kind(window: str) -> str | None:
    if not window:
        return None
    if window == "idle":
        return "idle"
    if window.startswith("warmup"):
        return "warmup"
    for phase in ("prefill", "decode"):
        if window.endswith(phase):
            return phase
    return None


def _shade_windows(ax, rows: pd.DataFrame) -> None:
    """Colour the background by measurement window (idle, warm-up, prefill, decode)."""
    if "window" not in rows or rows["window"].isna().all():
        return
    first_gpu = rows[rows["gpu_uuid"] == rows["gpu_uuid"].iloc[0]] if "gpu_uuid" in rows else rows
    tick = first_gpu.sort_values("elapsed_s")[["elapsed_s", "window"]]
    # ticks outside every window (before the idle baseline, between points' steps) have a null window
    t, w = tick["elapsed_s"].to_numpy(), tick["window"].astype(object).fillna("").astype(str).to_numpy()
    starts = np.flatnonzero(np.r_[True, w[1:] != w[:-1]])
    ends = np.r_[starts[1:], len(w)]
    for s, e in zip(starts, ends):
        colour = WINDOW_COLOURS.get(_kind(w[s]) or "")
        if colour:
            ax.axvspan(t[s], t[e] if e < len(t) else t[-1], color=colour, lw=0, zorder=0)


def _last_attempt(fig: Figure, point: str, rows: pd.DataFrame) -> pd.DataFrame:
    """A requeued point's samples hold every attempt; the timeline shows the last one."""
    if "attempt" not in rows or rows["attempt"].nunique() < 2:
        return rows
    last = rows[rows["attempt"] == rows["attempt"].max()]
    add_note(fig, f"{point}: attempts {sorted(rows['attempt'].dropna().unique().tolist())}, the last is drawn")
    return last.assign(elapsed_s=last["elapsed_s"] - last["elapsed_s"].min())


# The sample columns power_timeline and utilization_timeline read (besides sweep, point_id, node and
# elapsed_s): a reader that selects columns (the report) asks for these.
TIMELINE_COLUMNS = ("power_w", "gpu_util_pct", "window", "gpu_index", "gpu_uuid", "attempt")


def power_timeline(samples: pd.DataFrame, points: Sequence[str] | None = None, metric: str = "power_w",
                   max_points: int = 4) -> Figure:
    """Power of every GPU of a point (one line per node:GPU) over time, windows shaded; a panel per point."""
    return _timeline(samples, points, metric, max_points, "Per-GPU power over time")


def utilization_timeline(samples: pd.DataFrame, points: Sequence[str] | None = None, max_points: int = 4) -> Figure:
    """SM utilization of every GPU of a point (%, NVML's, at the sampler's ~10 Hz) over time, windows shaded."""
    return _timeline(samples, points, "gpu_util_pct", max_points, "Per-GPU utilization over time")


def _timeline(samples: pd.DataFrame, points: Sequence[str] | None, metric: str, max_points: int,
              title: str) -> Figure:
    if samples.empty:
        return message_figure(title, NO_SAMPLES)
    if metric not in samples or samples[metric].isna().all():
        return message_figure(title, f"{metric} is null in every sample of these points (the GPU did not report it)")
    s = samples if points is None else samples[samples["point_id"].astype(str).isin(list(points))]
    keys = list(dict.fromkeys(zip(s["sweep"].astype(str), s["point_id"].astype(str))))
    if not keys:
        return message_figure(title, f"none of the points {list(points or [])} has samples")
    fig, axes = new_figure(min(len(keys), max_points), 6.0, 3.4)
    fig.suptitle(title)
    grouped = s.groupby(["sweep", "point_id"], observed=True)
    for ax, key in zip(axes, keys):
        rows = _last_attempt(fig, key[1], grouped.get_group(key))
        _shade_windows(ax, rows)
        gpus = rows.groupby(["node", "gpu_index"] if "gpu_index" in rows else ["node", "gpu_uuid"], observed=True)
        for (node, gpu), part in gpus:
            part = part.sort_values("elapsed_s")
            ax.plot(part["elapsed_s"], part[metric], lw=1, label=f"{node}:{gpu}")
        ax.set_title(key[1], fontsize=8)
        ax.set_xlabel("seconds since the point's first sample")
        ax.set_ylabel(f"{LABELS.get(metric, metric)} per GPU")
        handles, labels = ax.get_legend_handles_labels()
        shown = [Patch(color=c, label=k) for k, c in WINDOW_COLOURS.items()]
        ax.legend(handles[:8] + shown, labels[:8] + list(WINDOW_COLOURS), fontsize=7, ncol=2)
        if gpus.ngroups > 8:
            add_note(fig, f"{key[1]}: {gpus.ngroups} GPUs drawn, 8 named in the legend")
    if len(keys) > max_points:
        add_note(fig, f"{len(keys)} points have samples; the first {max_points} are shown "
                      "(pass points=[...] to choose)")
    return fig


def _labelled(points: pd.DataFrame, needed: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    d = done(points)
    d = d[d[list(needed)].notna().all(axis=1)] if all(n in d for n in needed) else d.iloc[0:0]
    dims = varied(done(points)) or ["model"]
    d = d.assign(label=[point_label(r, dims) for _, r in d.iterrows()]).sort_values(dims)
    return d, dims


def _bars(ax, labels: list[str], series: dict[str, np.ndarray], stacked: bool = False) -> None:
    at = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    width = 0.8 if stacked else 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        if stacked:
            ax.bar(at, values, width, bottom=bottom, label=name)
            bottom = bottom + values
        else:
            ax.bar(at - 0.4 + width * (i + 0.5), values, width, label=name)
    ax.set_xticks(at, labels, rotation=60, ha="right", fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _cap(fig: Figure, d: pd.DataFrame) -> pd.DataFrame:
    if len(d) > MAX_BARS:
        add_note(fig, f"{len(d)} points; the first {MAX_BARS} are shown (filter the points frame for others)")
    return d.head(MAX_BARS)


def energy_split(points: pd.DataFrame) -> Figure:
    """Energy per generated token split into prefill and decode, per point (stacked)."""
    title = "Prefill and decode energy per token"
    need = ("prefill_energy_per_token_j", "decode_energy_per_token_j")
    d, _ = _labelled(points, need)
    if d.empty:
        return message_figure(title, why_missing(points, need[0]))
    fig, (ax,) = new_figure(1, 7.0, 4.0)
    d = _cap(fig, d)
    fig.suptitle(title)
    _bars(ax, d["label"].tolist(), {"prefill": d[need[0]].to_numpy(), "decode": d[need[1]].to_numpy()}, True)
    ax.set_ylabel("J per generated token")
    return fig


def gross_vs_net(points: pd.DataFrame) -> Figure:
    """Energy per token as measured (gross) and with the GPUs' idle power subtracted (net), per point."""
    title = "Gross vs idle-subtracted energy per token"
    d, _ = _labelled(points, ("energy_per_token_j",))
    if d.empty:
        return message_figure(title, why_missing(points, "energy_per_token_j"))
    fig, (ax,) = new_figure(1, 7.0, 4.0)
    d = _cap(fig, d)
    fig.suptitle(title)
    series = {"gross (measured)": d["energy_per_token_j"].to_numpy()}
    if d["net_energy_per_token_j"].notna().any():
        series["net (minus idle power x time)"] = d["net_energy_per_token_j"].to_numpy()
    else:
        add_note(fig, "no idle power measured (meter.idle_s=0): only gross energy is drawn")
    _bars(ax, d["label"].tolist(), series)
    ax.set_ylabel("J per generated token")
    return fig


def roofline(points: pd.DataFrame) -> Figure:
    """Measured tokens/s against the HBM-bandwidth roofline of decode, and J/token against its floor."""
    title = "Efficiency against physical limits"
    d, _ = _labelled(points, ("tokens_per_s", "roofline_tokens_per_s"))
    if d.empty:
        return message_figure(title, why_missing(points, "roofline_frac"))
    fig, (ax1, ax2) = new_figure(2, 6.0, 4.0)
    d = _cap(fig, d)
    fig.suptitle(title)
    labels = d["label"].tolist()
    _bars(ax1, labels, {"measured": d["tokens_per_s"].to_numpy(),
                        "HBM roofline": d["roofline_tokens_per_s"].to_numpy()})
    ax1.set_yscale("log")
    ax1.set_ylabel("tokens/s")
    for i, frac in enumerate(d["roofline_frac"]):
        ax1.annotate(f"{100 * frac:.2g}%", (i, d["tokens_per_s"].iloc[i]), ha="center", va="bottom", fontsize=7)
    e = d[d["energy_floor_per_token_j"].notna() & d["energy_per_token_j"].notna()]
    if e.empty:
        ax2.axis("off")
        ax2.text(0.5, 0.5, why_missing(points, "energy_over_floor"), ha="center", va="center", wrap=True,
                 fontsize=9, transform=ax2.transAxes)
        add_note(fig, why_missing(points, "energy_over_floor"))
    else:
        floor = e["energy_floor_per_token_j"].to_numpy()
        _bars(ax2, e["label"].tolist(), {"measured": e["energy_per_token_j"].to_numpy(),
                                         "floor (idle power x roofline time)": floor})
        ax2.set_yscale("log")
        ax2.set_ylabel("J per generated token")
    return fig


def power_cap_effect(points: pd.DataFrame) -> Figure:
    """Table III drawn: % change of time, energy, tokens/s and J/token at each cap against the highest."""
    title = "Effect of the GPU power cap (paper Table III)"
    table = power_cap_table(points)
    if table.empty:
        return message_figure(title, table.attrs.get("note", "no power-cap comparison possible"))
    groups = [c for c in table.columns if c not in ("power_cap", "reference_cap") and c not in CAP_METRICS
              and not c.endswith("_change_pct")]
    parts = list(table.groupby(groups, dropna=False, observed=True)) if groups else [("", table)]
    fig, axes = new_figure(min(len(parts), 12), 6.0, 3.6)
    fig.suptitle(title)
    for ax, (key, part) in zip(axes, parts):
        cols = [c for c in (f"{m}_change_pct" for m in CAP_METRICS) if c in part and part[c].notna().any()]
        _bars(ax, part["power_cap"].tolist(), {c.removesuffix("_change_pct"): part[c].to_numpy() for c in cols})
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_ylabel(f"% change vs {part['reference_cap'].iloc[0]}")
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(", ".join(f"{g}={v}" for g, v in zip(groups, key)), fontsize=8)
    if table.attrs.get("note"):
        add_note(fig, table.attrs["note"])
    return fig
