"""Figures and tables of a sweep (matplotlib Figures, pandas DataFrames); reads energybench.results only.

    import energybench.results as results, energybench.analysis as analysis
    points = results.points("results/my-sweep")
    fig = analysis.tokens_per_s_by_model(points); fig.savefig("fig2.png")

Every figure function returns a `matplotlib.figure.Figure` (Agg canvas, no pyplot state). A figure that has
nothing to draw says why on itself and has `fig.empty = True`; `fig.notes` lists what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from energybench.analysis.advice_text import advice_table, front_table
from energybench.analysis.advise import Advice, Constraints, advise
from energybench.analysis.advice_figure import pareto_figure
from energybench.analysis.extra import (energy_split, gross_vs_net, power_cap_effect, power_timeline, roofline,
                                        utilization_timeline)
from energybench.analysis.grid import done, point_label, varied
from energybench.analysis.paper import (energy_per_response_by_shards_batch, energy_per_second_by_model,
                                        energy_per_token_by_shards_tokens, power_by_shards_batch,
                                        tokens_per_s_by_model)
from energybench.analysis.tables import (efficiency_table, memory_table, power_cap_table, status_table,
                                         summary_table, utilization_table)


@dataclass(frozen=True)
class FigureSpec:
    name: str  # file stem of the figure in reports
    draw: Callable  # figure function
    input: str  # "points" or "samples": which frame it takes
    how_to_read: str  # one paragraph for readers of a report


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("fig2_tokens_per_s", tokens_per_s_by_model, "points",
               "Generated tokens per second of the measured window (warm-up excluded), per model, coloured by "
               "GPU and dataset. Higher is faster. Error bars: spread over seeds where several ran."),
    FigureSpec("fig3_energy_per_second", energy_per_second_by_model, "points",
               "Energy per second = total GPU energy of the job / generation time, i.e. the average power "
               "of all the job's GPUs together (every GPU on every node, counted once)."),
    FigureSpec("fig4_5_power_shards_batch", power_by_shards_batch, "points",
               "Energy per second against the number of shards (GPUs), one line per batch size. More shards "
               "add GPUs that each draw at least their idle power."),
    FigureSpec("fig6_7_energy_per_token", energy_per_token_by_shards_tokens, "points",
               "Joules per generated token against shards, one line per max_tokens. Lower is better."),
    FigureSpec("fig8_9_energy_per_response", energy_per_response_by_shards_batch, "points",
               "Joules per response (prompt answered) against shards, one line per batch size."),
    FigureSpec("power_cap_effect", power_cap_effect, "points",
               "Table III drawn: % change of time, energy, tokens/s and J/token at each power cap against the "
               "highest cap of the same configuration. Negative energy with small time change is the win."),
    FigureSpec("power_timeline", power_timeline, "samples",
               "Power of every GPU of the point (one line per node:GPU) from the sampler (~10 Hz), background "
               "shaded by window: idle baseline, warm-up, prefill, decode. Uneven lines show load imbalance."),
    FigureSpec("utilization_timeline", utilization_timeline, "samples",
               "SM utilization of every GPU (NVML's % of time a kernel ran, ~10 Hz), windows shaded as above. Dips "
               "between decode steps are host-side launch gaps; a GPU lower than its peers waits on them."),
    FigureSpec("pareto", pareto_figure, "points",
               "Per workload, energy per token against TPOT (left) and tokens/s (right): every measured point "
               "(b<batch> s<shards>), the Pareto front (no other point is cheaper and faster), the lowest-energy "
               "point (star; python -m energybench.advise adds constraints) and the paper's default (square)."),
    FigureSpec("energy_split", energy_split, "points",
               "Energy per generated token split into the prefill phase (prompt processing) and decode "
               "(token-by-token generation), from counter readings at each phase edge."),
    FigureSpec("gross_vs_net", gross_vs_net, "points",
               "Gross energy as measured vs net energy with idle power x time subtracted: the part of the "
               "energy the inference added on top of GPUs that are switched on anyway."),
    FigureSpec("roofline", roofline, "points",
               "Left: measured tokens/s against the HBM-bandwidth roofline of decode (every step reads the "
               "weights and the KV cache once), with the fraction reached. Right: measured J/token against "
               "the floor idle power x roofline time per token."),
)

__all__ = [
    "Advice", "Constraints", "FIGURES", "FigureSpec", "advice_table", "advise", "done", "efficiency_table",
    "energy_per_response_by_shards_batch", "energy_per_second_by_model", "energy_per_token_by_shards_tokens",
    "energy_split", "front_table", "gross_vs_net", "memory_table", "pareto_figure", "point_label",
    "power_by_shards_batch", "power_cap_effect", "power_cap_table", "power_timeline", "roofline", "status_table",
    "summary_table", "tokens_per_s_by_model", "utilization_table", "utilization_timeline", "varied",
]
