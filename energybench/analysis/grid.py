"""What a sweep varied, how to label it, and one plotting core every figure shares (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Grid dimensions a figure may put on x, colour or panels; `seed` is a replicate: averaged, spread shown.
AXES = ("model", "gpu_name", "dataset", "batch", "max_tokens", "shards", "power_cap_w", "engine", "length",
        "samples", "temperature", "top_p", "dtype", "cluster", "sweep", "workload", "rate_rps")
NUMERIC_AXES = ("batch", "max_tokens", "shards", "power_cap_w", "samples", "temperature", "top_p", "rate_rps")
SHORT = {"batch": "b", "max_tokens": "t", "shards": "s", "samples": "n", "temperature": "T", "top_p": "p",
         "rate_rps": "r"}
MAX_PANELS = 12
ENERGY_METRICS = ("energy_j", "net_energy_j", "power_w", "power_per_gpu_w", "net_power_w", "energy_per_token_j",
                  "energy_per_response_j", "net_energy_per_token_j", "prefill_energy_j", "decode_energy_j",
                  "prefill_energy_per_token_j", "decode_energy_per_token_j", "prefill_energy_frac",
                  "energy_over_floor", "energy_floor_per_token_j", "tdp_frac", "idle_power_w")
LABELS = {
    "tokens_per_s": "tokens/s (generated)", "power_w": "energy per second, J/s (all GPUs)",
    "power_per_gpu_w": "power per GPU, W", "energy_per_token_j": "energy per token, J",
    "energy_per_response_j": "energy per response, J", "net_energy_per_token_j": "idle-subtracted J/token",
    "gpu_util_pct": "GPU utilization, %", "gpu_mem_used_frac": "GPU memory used (fraction)",
    "roofline_frac": "tokens/s over HBM roofline", "energy_over_floor": "J/token over floor",
    "duration_s": "generation time, s", "energy_j": "energy, J",
}
NO_ENERGY = ("no energy measured in these points (CPU run, meter.gpu=none, or no NVML): "
             "energy figures are left empty rather than drawn as zeros")


def done(points: pd.DataFrame) -> pd.DataFrame:
    """The finished points (status done); failed, partial and pending points are listed, not plotted."""
    if "status" not in points:
        return points
    return points[points["status"] == "done"]


def varied(points: pd.DataFrame, axes: Sequence[str] = AXES) -> list[str]:
    """The axes that take more than one value among `points` (a missing value counts as one)."""
    return [a for a in axes if a in points and points[a].nunique(dropna=False) > 1]


def is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def value_label(axis: str, value: object) -> str:
    if is_missing(value):
        return "limit as found" if axis == "power_cap_w" else "n/a"
    if axis == "power_cap_w":
        return f"{value:g} W"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_label(row: pd.Series, axes: Sequence[str]) -> str:
    """Short label of a point by the given axes, e.g. "7b b64 s2 250 W"."""
    parts = []
    for a in axes:
        text = value_label(a, row.get(a))
        parts.append(f"{SHORT[a]}{text}" if a in SHORT else text)
    return " ".join(parts) or str(row.get("point_id", "point"))


def sort_values(axis: str, values: Sequence[object]) -> list[object]:
    """Distinct values in plotting order: numbers ascending (missing last), others as strings."""
    present = list(dict.fromkeys(v for v in values if not is_missing(v)))
    missing = [None] if any(is_missing(v) for v in values) else []
    return sorted(present, key=(lambda v: v) if axis in NUMERIC_AXES else str) + missing


def new_figure(panels: int = 1, width_in: float = 5.0, height_in: float = 3.6) -> tuple[Figure, list]:
    """A Figure with an Agg canvas and `panels` axes in a grid of at most three columns."""
    cols = min(3, max(1, panels))
    rows = math.ceil(max(1, panels) / cols)
    fig = Figure(figsize=(width_in * cols, height_in * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(1, panels))]
    fig.notes = []  # what is missing or left out; the report prints these under the figure
    fig.empty = False  # True: nothing could be drawn, the figure only says why
    return fig, axes


def add_note(fig: Figure, text: str) -> None:
    """Record a note on the figure (fig.notes) and print it under the plot."""
    fig.notes.append(text)
    fig.supxlabel("\n".join(fig.notes), fontsize=8, color="0.3", ha="left", x=0.01)


def message_figure(title: str, message: str) -> Figure:
    """A figure that says why there is nothing to plot (never an empty or all-zero plot)."""
    fig, (ax,) = new_figure(1, 6.0, 2.4)
    ax.axis("off")
    fig.suptitle(title)
    ax.text(0.5, 0.5, _wrap(message, 70), ha="center", va="center", fontsize=10, transform=ax.transAxes)
    fig.notes = [message]
    fig.empty = True
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def why_missing(points: pd.DataFrame, metric: str) -> str:
    """Why `metric` has no value among the done points, in words."""
    if points.empty:
        return "no points found"
    d = done(points)
    if d.empty:
        return f"no finished points yet ({len(points)} points, none done)"
    if metric in ENERGY_METRICS and ("energy_j" not in d or d["energy_j"].isna().all()):
        return NO_ENERGY
    if metric == "idle_power_w" or metric.startswith("energy_floor") or metric == "energy_over_floor":
        if "idle_power_w" not in d or d["idle_power_w"].isna().all():
            return "no idle power measured (meter.idle_s=0 or no GPU meter): the J/token floor needs it"
    if metric in ("roofline_frac", "roofline_tokens_per_s", "tdp_frac") and d.get("card", pd.Series()).isna().all():
        names = ", ".join(sorted({str(n) for n in d.get("gpu_name", pd.Series(dtype=object)).dropna()})) or "none"
        return (f"no known GPU among these points (gpu_name: {names}); known cards are listed in "
                "energybench.device.cards (add one: docs/extending.md, \"Add a GPU card\")")
    return f"{metric} is null in every finished point"


def aggregate(d: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Mean, standard deviation and count of `metric` per `keys` (replicates such as seeds averaged)."""
    g = d.groupby(keys, dropna=False, observed=True)[metric]
    return g.agg(["mean", "std", "count"]).reset_index()


def facets(d: pd.DataFrame, used: Sequence[str]) -> tuple[list[str], list[tuple[str, pd.DataFrame]]]:
    """Panels over the varied axes not already on x or colour: (panel axes, [(title, rows)])."""
    rest = [a for a in varied(d) if a not in used]
    if not rest:
        return rest, [("", d)]
    panels = []
    for key, rows in d.groupby(rest, dropna=False, observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        panels.append((", ".join(f"{a}={value_label(a, v)}" for a, v in zip(rest, key)), rows))
    return rest, panels


PREFERRED_X = ("batch", "shards", "max_tokens", "power_cap_w", "model", "dataset", "gpu_name")


def choose_axes(d: pd.DataFrame, x: str, hue: Sequence[str]) -> tuple[str, list[str], str | None]:
    """The requested x and colour axes where they vary; else the sweep's own varied axes take their place,
    so a sweep over batch alone still gets a line instead of one bar per panel. Returns a note if moved."""
    dims = varied(d)
    use_hue = [h for h in hue if h in dims and h != x]
    note = None
    if x not in dims and dims:
        spare = [a for a in dims if a not in use_hue] or dims
        new_x = next((a for a in PREFERRED_X if a in spare), spare[0])
        note = f"{x} has a single value here ({value_label(x, d[x].iloc[0])}); drawn against {new_x}"
        x = new_x
        use_hue = [h for h in use_hue if h != x]
    if not use_hue:
        spare = [a for a in dims if a != x]
        if spare:
            use_hue = [next((a for a in PREFERRED_X if a in spare), spare[0])]
    return x, use_hue, note


def plot_metric(points: pd.DataFrame, metric: str, x: str, hue: Sequence[str], title: str,
                ylabel: str | None = None) -> Figure:
    """`metric` over `x`, one series per `hue` combination, one panel per other varied axis.

    Numeric x draws lines with markers; categorical x draws grouped bars. Replicates are averaged with a
    standard-deviation bar. Points without the metric are left out and counted in a note.
    """
    unknown = [a for a in (x, *hue) if a not in points]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a column of the points frame; axes to use: {', '.join(AXES)}")
    d = done(points)
    if metric not in d or d[metric].notna().sum() == 0:
        return message_figure(title, why_missing(points, metric))
    missing = int(d[metric].isna().sum())
    d = d[d[metric].notna()]
    x, hue, moved = choose_axes(d, x, hue)
    rest, panels = facets(d, [x, *hue])
    shown = panels[:MAX_PANELS]
    fig, axes = new_figure(len(shown))
    fig.suptitle(title)
    for ax, (panel_title, rows) in zip(axes, shown):
        _draw(ax, rows, metric, x, hue)
        ax.set_title(panel_title, fontsize=9)
        ax.set_ylabel(ylabel or LABELS.get(metric, metric))
        ax.set_xlabel(x)
    if moved:
        add_note(fig, moved)
    if missing:
        add_note(fig, f"{missing} finished point(s) have no {metric} and are not drawn")
    if len(panels) > MAX_PANELS:
        add_note(fig, f"{len(panels)} panels ({', '.join(rest)}); the first {MAX_PANELS} are shown: "
                      "filter the points frame to see the others")
    return fig


def _draw(ax, rows: pd.DataFrame, metric: str, x: str, hue: list[str]) -> None:
    xs = sort_values(x, rows[x].tolist()) if x in rows else [None]
    pos = {value_label(x, v): i for i, v in enumerate(xs)}
    series = [("", rows)] if not hue else [
        (" ".join(value_label(h, v) for h, v in zip(hue, key if isinstance(key, tuple) else (key,))), part)
        for key, part in rows.groupby(hue, dropna=False, observed=True, sort=True)]
    bars = x not in NUMERIC_AXES
    width = 0.8 / max(1, len(series))
    for i, (name, part) in enumerate(series):
        agg = aggregate(part.assign(_x=part[x].map(lambda v: value_label(x, v))), ["_x"], metric)
        at = np.array([pos[v] for v in agg["_x"]], dtype=float)
        order = np.argsort(at)
        at, mean, std = at[order], agg["mean"].to_numpy()[order], agg["std"].fillna(0).to_numpy()[order]
        if bars:
            ax.bar(at - 0.4 + width * (i + 0.5), mean, width, yerr=std if std.any() else None, label=name or None)
        else:
            ax.errorbar(at, mean, yerr=std if std.any() else None, marker="o", capsize=3, label=name or None)
    ax.set_xticks(range(len(pos)), list(pos))
    ax.grid(axis="y", alpha=0.3)
    if hue:
        ax.legend(title=" ".join(hue), fontsize=8, title_fontsize=8)
