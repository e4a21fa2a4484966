"""Tables of a points frame: status, summary, the paper's Tables III-V, and efficiency against physical limits.

Each returns a pandas DataFrame; `frame.attrs["note"]` says what is missing when something is.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from energybench.analysis.grid import NO_ENERGY, done, is_missing, value_label, varied

CAP_METRICS = ("duration_s", "energy_j", "tokens_per_s", "energy_per_token_j")


def _noted(frame: pd.DataFrame, note: str | None) -> pd.DataFrame:
    if note:
        frame.attrs["note"] = note
    return frame


def status_table(points: pd.DataFrame) -> pd.DataFrame:
    """Every point that is not done: its status, why, and how many batches it finished."""
    cols = [c for c in ("sweep", "point_id", "status", "reason", "batches_done", "batches_expected", "updated_at")
            if c in points]
    rest = points[points["status"] != "done"] if "status" in points else points.iloc[0:0]
    return rest[cols].reset_index(drop=True)


def summary_table(points: pd.DataFrame) -> pd.DataFrame:
    """One row per finished point: the axes the sweep varied, then the headline metrics."""
    d = done(points)
    dims = varied(d) or [c for c in ("model", "batch") if c in d]
    metrics = [c for c in ("tokens_per_s", "energy_per_token_j", "energy_per_response_j", "power_w",
                           "net_energy_per_token_j", "gpu_util_pct", "gpu_mem_used_frac", "roofline_frac",
                           "counter_vs_integral") if c in d and d[c].notna().any()]
    out = d[dims + metrics].sort_values(dims).reset_index(drop=True)
    return _noted(out, None if "energy_j" in d and d["energy_j"].notna().any() else NO_ENERGY)


def _cap(row: pd.Series) -> tuple[float, str]:
    """The limit a point ran under and its label: the requested cap; else the enforced limit it found; else
    +inf (uncapped, limit not recorded). Either way an uncapped point counts as the highest."""
    cap, enforced = row.get("power_cap_w"), row.get("enforced_limit_w")
    if not is_missing(cap):
        return float(cap), f"{cap:g} W"
    if not is_missing(enforced):
        return float(enforced), f"{enforced:g} W (as found)"
    return math.inf, "limit as found"


def power_cap_table(points: pd.DataFrame) -> pd.DataFrame:
    """Table III: % change in time, energy, tokens/s (and J/token) at each cap against the highest cap.

    Points are compared within groups that share every other varied axis; replicates are averaged first.
    A point without a cap (limit as found) counts as the highest. Energy columns stay null without energy.
    """
    d = done(points)
    if "power_cap_w" not in d or d["power_cap_w"].nunique(dropna=False) < 2:
        return _noted(pd.DataFrame(columns=["power_cap_w", *[f"{m}_change_pct" for m in CAP_METRICS]]),
                      "power_cap was not varied in these points (sweep it: power_cap=250,175,150)")
    labels = [_cap(r) for _, r in d.iterrows()]
    d = d.assign(cap_w=[c for c, _ in labels], cap_label=[lbl for _, lbl in labels])
    groups = [a for a in varied(d) if a != "power_cap_w"]
    metrics = [m for m in CAP_METRICS if m in d]
    mean = d.groupby([*groups, "cap_w", "cap_label"], dropna=False, observed=True)[metrics].mean().reset_index()
    rows = []
    for _, part in (mean.groupby(groups, dropna=False, observed=True) if groups else [((), mean)]):
        ref = part.loc[part["cap_w"].idxmax()]
        for _, r in part.sort_values("cap_w", ascending=False).iterrows():
            row = {g: r[g] for g in groups}
            row["power_cap"], row["reference_cap"] = r["cap_label"], ref["cap_label"]
            for m in metrics:
                row[m] = r[m]
                row[f"{m}_change_pct"] = 100.0 * (r[m] / ref[m] - 1.0) if ref[m] else np.nan
            rows.append(row)
    out = pd.DataFrame(rows)
    no_energy = "energy_j" not in d or d["energy_j"].isna().all()
    return _noted(out, NO_ENERGY if no_energy else None)


def _pivot(points: pd.DataFrame, metric: str, what: str) -> pd.DataFrame:
    d = done(points)
    if metric not in d or d[metric].isna().all():
        return _noted(pd.DataFrame(), f"no {what} recorded in these points (it comes from the GPU sampler)")
    dims = varied(d)
    cols = next((c for c in ("shards", "batch") if c in dims), None)
    index = [a for a in dims if a != cols] or ["model"]
    if cols is None:
        return d.groupby(index, dropna=False, observed=True)[metric].mean().to_frame(metric)
    table = d.pivot_table(index=index, columns=cols, values=metric, aggfunc="mean", dropna=False)
    table.columns = [f"{cols}={value_label(cols, c)}" for c in table.columns]
    return table


def utilization_table(points: pd.DataFrame) -> pd.DataFrame:
    """Table IV: mean GPU (SM) utilization, % (by shards, else batch, across; other varied axes down)."""
    return _pivot(points, "gpu_util_pct", "GPU utilization")


def memory_table(points: pd.DataFrame) -> pd.DataFrame:
    """Table V: GPU memory used, as a fraction of each GPU's memory (laid out as Table IV)."""
    return _pivot(points, "gpu_mem_used_frac", "GPU memory use")


def efficiency_table(points: pd.DataFrame) -> pd.DataFrame:
    """Measured tokens/s against the HBM roofline of decode, and J/token against its floor, per point."""
    d = done(points)
    dims = varied(d) or ["model", "batch"]
    cols = ["card", "mem_bandwidth_gb_s", "context_tokens", "tokens_per_s", "roofline_tokens_per_s",
            "roofline_frac", "energy_per_token_j", "energy_floor_per_token_j", "energy_over_floor"]
    out = d[[c for c in dict.fromkeys(dims + cols) if c in d]].reset_index(drop=True)
    if "card" not in d or d["card"].isna().all():
        names = ", ".join(sorted({str(n) for n in d.get("gpu_name", pd.Series(dtype=object)).dropna()}))
        return _noted(out, f"no known GPU (gpu_name: {names or 'none'}): no roofline")
    return _noted(out, None if d["idle_power_w"].notna().any() else
                  "no idle power measured: no J/token floor (set meter.idle_s > 0)")
