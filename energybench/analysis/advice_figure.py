"""The Pareto figure: energy per token against TPOT and against tokens/s per workload, the front drawn, the
recommended configuration and the paper's default marked."""

from __future__ import annotations

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from energybench.analysis.advise import KNOBS, Advice, Constraints, advise
from energybench.analysis.grid import LABELS, add_note, message_figure, point_label, why_missing

MAX_WORKLOADS = 4
PANELS = (("tpot_s", "TPOT, s (time per output token)"), ("tokens_per_s", "tokens/s (generated)"))


def _panel(ax, a: Advice, x: str, y: str, xlabel: str) -> None:
    d = a.points
    ax.scatter(d[x], d[y], s=22, color="0.55", zorder=2, label="measured point")
    lo, hi = f"{y}_lo", f"{y}_hi"
    if lo in d and d[lo].notna().any():
        ax.errorbar(d[x], d[y], yerr=[(d[y] - d[lo]).clip(lower=0), (d[hi] - d[y]).clip(lower=0)], fmt="none",
                    ecolor="0.7", lw=0.8, zorder=1)
    front = d[d[f"on_front_{x}"]].sort_values([x, y])
    ax.plot(front[x], front[y], drawstyle="steps-post" if x == "tpot_s" else "steps-pre", color="C0", lw=1.5,
            marker="o", ms=4, zorder=3, label="Pareto front")  # the marker shows a front of one point too
    knobs = ["batch", "shards"] + [k for k in KNOBS[2:] if d[k].nunique(dropna=False) > 1]
    for _, r in d.iterrows():
        ax.annotate(point_label(r, knobs), (r[x], r[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    marks = (("paper default", a.default, "s", "none", "C1"), ("recommended", a.recommended, "*", "C3", "C3"),
             ("closest (misses the constraints)", a.closest, "X", "C3", "C3"))
    for name, row, marker, face, edge in marks:
        if row is not None:
            ax.scatter([row[x]], [row[y]], s=160, marker=marker, facecolors=face, edgecolors=edge, lw=1.5,
                       zorder=4, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(LABELS.get(y, y))
    ax.grid(alpha=0.3)


def pareto_figure(points: pd.DataFrame, batches: pd.DataFrame | None = None,
                  constraints: Constraints = Constraints(), per: str = "token", n: int = 1000,
                  seed: int = 0) -> Figure:
    """Per workload (model, dataset, ...): energy per `per` against TPOT and against tokens/s, every measured
    point labelled by batch and shards, the 2-D Pareto front as a step line, the recommended point (star) and
    the paper's default (square). With `batches`, 95 % bootstrap intervals as error bars."""
    title = f"Energy per {per} against latency and throughput (Pareto front)"
    energy = f"energy_per_{per}_j"
    advices = [a for a in advise(points, batches, constraints, per, n if batches is not None else 0, seed)
               if not a.points.empty]
    if not advices:
        return message_figure(title, why_missing(points, energy))
    advices.sort(key=lambda a: (-len(a.points), a.label))  # the workloads with the most measured points first
    shown = advices[:MAX_WORKLOADS]
    fig = Figure(figsize=(10.0, 3.8 * len(shown) + 0.4), layout="constrained")  # a row per workload
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(len(shown), 2, i + 1) for i in range(2 * len(shown))]
    fig.notes, fig.empty = [], False
    fig.suptitle(title)
    for i, a in enumerate(shown):
        for j, (x, xlabel) in enumerate(PANELS):
            ax = axes[2 * i + j]
            _panel(ax, a, x, energy, xlabel)
            ax.set_title(a.label, fontsize=8)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    if len(advices) > MAX_WORKLOADS:
        add_note(fig, f"{len(advices)} workloads; the {MAX_WORKLOADS} with the most measured points are shown "
                      "(filter the points frame for others)")
    for a in shown:
        if a.recommended is None and a.closest is not None:
            add_note(fig, f"{a.label}: {a.sentence}")
    return fig
