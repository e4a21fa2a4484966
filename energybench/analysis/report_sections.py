"""Report sections on choosing a configuration: the recommendation, carbon and cost, and Slurm's energy
accounting against our own."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

import energybench.results as results
from energybench.analysis.advice_text import advice_table, factors_line, front_table
from energybench.analysis.advise import advise
from energybench.analysis.grid import done, varied
from energybench.analysis.render import Block

NOT_REPORTED = "not reported by this cluster's acct_gather_energy plugin"
SACCT_GAP = (
    "sacct's ConsumedEnergyRaw covers the whole job, on every node, from its start to its end: model load, the "
    "idle baseline, warm-up and teardown as well as generation, measured by whatever the site's "
    "AcctGatherEnergyType plugin reads: acct_gather_energy/rapl counts CPU packages and DRAM only (no GPUs), "
    "/ipmi the whole node from its BMC (fans, power-supply losses, NICs included), /gpu the GPUs. Ours is the "
    "GPUs (plus RAPL CPU and DRAM where readable) over the generation window only. A ratio well above 1 is "
    "therefore expected; near or below 1 means the plugin misses the GPUs.")
CARBON_COLUMNS = ("energy_j", "total_energy_j", "co2_g", "co2_per_token_g", "cost_usd", "cost_per_mtoken_usd",
                  "co2_total_g", "co2_total_per_token_g", "cost_total_usd", "cost_total_per_mtoken_usd")


def recommendation(points: pd.DataFrame, paths: Sequence[str | Path], n: int = 1000) -> list[Block]:
    """The advice of `python -m energybench.advise` without constraints: table, sentence, notes, points."""
    blocks = [Block("h2", "Which configuration to run"),
              Block("p", "Per workload, the lowest-energy measured configuration (no constraints; `python -m "
                         "energybench.advise` adds TPOT, TTFT, tokens/s and GPU limits), what it saves against the "
                         "paper's default (batch 64, fewest shards, no cap) and against the fastest point, with "
                         f"95 % bootstrap intervals over each point's batches ({n} resamples, seed 0). How the "
                         "front and the savings are computed: docs/analysis.md.")]
    if done(points).empty:
        return blocks + [Block("p", "No finished point: nothing to recommend.")]
    batches = results.batches(*paths, measured_only=True, with_config=False)
    advices = advise(points, batches, n=n)
    blocks.append(Block("table", frame=advice_table(advices)))
    for a in advices:
        blocks += [Block("h3", a.label), Block("p", a.sentence or "Nothing to recommend.")]
        blocks += [Block("p", f"Note: {note}.") for note in a.notes]
        if not a.points.empty:
            blocks.append(Block("table", frame=front_table(a)))
    return blocks


def carbon_cost(points: pd.DataFrame) -> list[Block]:
    """CO2 and cost per finished point, GPU-only and GPU+CPU+DRAM where RAPL was read."""
    d = done(points)
    blocks = [Block("h2", "Carbon and cost"),
              Block("p", f"From the measured energy of the generation window: {factors_line(points)}. "
                         "kWh × PUE × factor; the `_total_` columns add RAPL CPU and DRAM energy where both were "
                         "read. Give a site's factors with --carbon-g-per-kwh, --pue, --usd-per-kwh.")]
    cols = [c for c in CARBON_COLUMNS if c in d and d[c].notna().any()]
    if not any(c.startswith(("co2", "cost")) for c in cols):
        return blocks
    dims = varied(d) or ["model"]
    return blocks + [Block("table", frame=d[dims + cols].sort_values(dims).reset_index(drop=True))]


def sacct(points: pd.DataFrame) -> list[Block]:
    """Per Slurm job: sacct's ConsumedEnergyRaw, our GPU (+RAPL) energy, their ratio, and why they differ."""
    blocks = [Block("h2", "Slurm energy accounting")]
    d = done(points)
    jobs = d[d["slurm_job_id"].notna()] if "slurm_job_id" in d else d.iloc[0:0]
    if jobs.empty:
        return blocks + [Block("p", "No finished point ran as a Slurm job: no accounting to compare.")]
    ours = jobs["total_energy_j"].fillna(jobs["energy_j"])
    table = pd.DataFrame({
        "point_id": jobs["point_id"], "slurm_job_id": jobs["slurm_job_id"],
        "sacct_energy_j": jobs["sacct_energy_j"], "our_energy_j": ours,
        "ours_covers": jobs["total_energy_j"].notna().map({True: "GPU+CPU+DRAM", False: "GPU"}),
        "sacct_over_ours": jobs["sacct_energy_j"] / ours.where(ours > 0),
        "note": [NOT_REPORTED + (f" ({n})" if isinstance(n, str) and n else "") if pd.isna(s) else ""
                 for s, n in zip(jobs["sacct_energy_j"], jobs.get("sacct_note", pd.Series(None, index=jobs.index)))],
    }).reset_index(drop=True)
    return blocks + [Block("p", SACCT_GAP), Block("table", frame=table)]
