"""Metric definitions, in one place; every table and figure uses these.

    tokens_per_s          = tokens / duration_s      (generated tokens over the measured generation window)
    power_w               = energy_j / duration_s    (energy per second, all GPUs of the job)
    energy_per_token_j    = energy_j / tokens
    energy_per_response_j = energy_j / responses
    net_energy_j          = energy_j - idle_power_w * duration_s

Derived per point by `derive_points` (the points frame of `energybench.results.points`):

    power_per_gpu_w          = power_w / shards
    net_power_w              = net_energy_j / duration_s
    net_energy_per_token_j   = net_energy_j / tokens
    prefill_energy_frac      = prefill_energy_j / (prefill_energy_j + decode_energy_j)
    prefill_energy_per_token_j, decode_energy_per_token_j = each phase's energy / tokens
    context_tokens           = (prompt_tokens + tokens) / responses      (mean prompt + generated, per response)
    weight_bytes             = bytes of weights one decode step reads (all layers + norms + output; not the
                               embedding table, of which a step reads only the batch's rows)
    kv_bytes_per_token       = 2 * n_layers * dim * dtype bytes            (K and V of one token, all layers)
    roofline_tokens_per_s    = batch * shards * bandwidth / (weight_bytes + batch * context_tokens * kv_bytes_per_token)
    roofline_frac            = tokens_per_s / roofline_tokens_per_s
    energy_floor_per_token_j = idle_power_w / roofline_tokens_per_s       (the job's GPUs draw at least their idle
                               power for at least the roofline's time per token)
    energy_over_floor        = energy_per_token_j / energy_floor_per_token_j
    tdp_frac                 = power_per_gpu_w / tdp_w
    effective_limit_w        = enforced_limit_w, else power_cap_w        (null: the limit as found, not recorded)

Carbon and money from the measured energy (`carbon_cost`; factors from the point's config.yaml `carbon.*`,
`cost.*`, or given when reading; PUE 1.0 where not given; an unknown intensity or price leaves its columns null):

    energy_kwh               = energy_j / 3.6e6                          (GPU energy of the generation window)
    total_energy_j           = energy_j + cpu_energy_j + dram_energy_j   (null unless RAPL read both domains)
    co2_g                    = energy_kwh * pue * carbon_intensity_g_per_kwh
    co2_per_token_g          = co2_g / tokens
    cost_usd                 = energy_kwh * pue * usd_per_kwh            (the facility pays the PUE overhead too)
    cost_per_mtoken_usd      = cost_usd / tokens * 1e6
    co2_total_g, co2_total_per_token_g, cost_total_usd, cost_total_per_mtoken_usd: the same from total_energy_j

bandwidth and TDP come from `energybench.device.cards` (vendor datasheets) by `gpu_name`, else the
cluster's `gpu_type`. See docs/methodology.md for why the roofline is drawn this way.

`duration_s` and `energy_j` cover the same window: from the first measured batch's start to the
last one's end, edges taken after synchronizing every GPU of the job. Warm-up batches are outside.
A metric whose input was not measured is None (null in Parquet), never 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from energybench.util.numbers import mean_or_none, ratio, sum_or_none  # noqa: F401 (results.metrics.ratio, ...)

if TYPE_CHECKING:
    import pandas as pd

# counter_vs_integral further than this from 1: the point logs a warning and the report lists it.
CROSS_CHECK_TOLERANCE = 0.05
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def derived(tokens: int, responses: int, duration_s: float, energy_j: float | None,
            idle_power_w: float | None) -> dict[str, float | None]:
    """The per-token, per-response, per-second and idle-subtracted metrics of a window."""
    net = None if energy_j is None or idle_power_w is None else energy_j - idle_power_w * duration_s
    return {
        "tokens_per_s": ratio(tokens, duration_s),
        "power_w": ratio(energy_j, duration_s),
        "energy_per_token_j": ratio(energy_j, tokens),
        "energy_per_response_j": ratio(energy_j, responses),
        "net_energy_j": net,
    }


def run_metrics(batches: list[dict], duration_s: float, energy_j: float | None,
                idle_power_w: float | None) -> dict:
    """Aggregate the measured (non-warm-up) batch rows of a point and its generation window."""
    tokens = sum(b["tokens"] for b in batches)
    responses = sum(b["responses"] for b in batches)
    return {
        "responses": responses,
        "prompt_tokens": sum(b["prompt_tokens"] for b in batches),
        "tokens": tokens,
        "wasted_tokens": sum(b["wasted_tokens"] for b in batches),
        "batches": len(batches),
        "duration_s": duration_s,
        "prefill_s": sum(b["prefill_s"] for b in batches),
        "decode_s": sum(b["decode_s"] for b in batches),
        "ttft_s": mean_or_none(b["ttft_s"] for b in batches),
        "tpot_s": mean_or_none(b["tpot_s"] for b in batches),
        "latency_s": mean_or_none(b["duration_s"] for b in batches),
        "energy_j": energy_j,
        "idle_power_w": idle_power_w,
        "prefill_energy_j": sum_or_none(b["prefill_energy_j"] for b in batches),
        "decode_energy_j": sum_or_none(b["decode_energy_j"] for b in batches),
        **derived(tokens, responses, duration_s, energy_j, idle_power_w),
    }


def weight_bytes_per_step(dim, n_layers, ffn_dim, vocab_size, dtype_bytes):
    """Bytes of weights one decode step reads (works on numbers and pandas Series alike).

    Per layer: wq, wk, wv, wo (4 dim^2), the SwiGLU w1, w2, w3 (3 dim ffn) and two RMSNorm vectors; then the
    final norm and the output projection (vocab dim). The token embedding is a lookup of the batch's rows only.
    LLaMA-7B in float16: 6.61e9 parameters, 13.2 GB.
    """
    per_layer = 4 * dim * dim + 3 * dim * ffn_dim + 2 * dim
    return dtype_bytes * (n_layers * per_layer + dim + vocab_size * dim)


def kv_bytes_per_token(dim, n_layers, dtype_bytes):
    """Bytes of the KV cache one token occupies and one decode step reads back: K and V, every layer."""
    return 2 * n_layers * dim * dtype_bytes


def roofline_tokens_per_s(mem_bandwidth_gb_s, shards, batch, weight_bytes, kv_bytes, context_tokens):
    """Upper bound of decode tokens/s when every step must read its weights and KV cache from HBM once.

    A step makes `batch` tokens and reads weight_bytes + batch * context_tokens * kv_bytes, split evenly over
    `shards` GPUs (tensor parallel), each reading at `mem_bandwidth_gb_s` (10^9 bytes/s). Communication,
    prefill and compute limits are ignored, so real engines stay below it.
    H100 SXM (3,350 GB/s), LLaMA-7B fp16, prompt 100 + 128 new tokens: 251 tokens/s at batch 1, 10,275 at 64.
    """
    step_bytes = weight_bytes + batch * context_tokens * kv_bytes
    return batch * shards * mem_bandwidth_gb_s * 1e9 / step_bytes


def derive_points(points: "pd.DataFrame") -> "pd.DataFrame":
    """The points frame with the derived columns listed in this module's docstring added (nulls stay null)."""
    import numpy as np
    import pandas as pd

    from energybench.device.cards import card_for

    df = points.copy()

    def col(name: str) -> pd.Series:
        return pd.to_numeric(df[name], errors="coerce") if name in df else pd.Series(np.nan, index=df.index)

    def div(num: pd.Series, den: pd.Series) -> pd.Series:
        return (num / den.where(den != 0)).astype(float)

    shards, tokens = col("shards"), col("tokens")
    df["power_per_gpu_w"] = div(col("power_w"), shards)
    df["net_power_w"] = div(col("net_energy_j"), col("duration_s"))
    df["net_energy_per_token_j"] = div(col("net_energy_j"), tokens)
    df["prefill_energy_frac"] = div(col("prefill_energy_j"), col("prefill_energy_j") + col("decode_energy_j"))
    df["prefill_energy_per_token_j"] = div(col("prefill_energy_j"), tokens)
    df["decode_energy_per_token_j"] = div(col("decode_energy_j"), tokens)
    df["context_tokens"] = div(col("prompt_tokens") + tokens, col("responses"))
    df["effective_limit_w"] = col("enforced_limit_w").fillna(col("power_cap_w"))

    names = df["gpu_name"] if "gpu_name" in df else pd.Series(None, index=df.index, dtype=object)
    types = df["gpu_type"] if "gpu_type" in df else pd.Series(None, index=df.index, dtype=object)
    cards = [card_for(n) or card_for(t) for n, t in zip(names.tolist(), types.tolist())]
    df["card"] = pd.Series([c.name if c else None for c in cards], index=df.index, dtype=object)
    for key in ("mem_bandwidth_gb_s", "tdp_w", "memory_gb"):
        df[key] = [getattr(c, key) if c else np.nan for c in cards]
    dtypes = df["dtype"] if "dtype" in df else pd.Series(None, index=df.index, dtype=object)
    dtype_bytes = pd.Series([DTYPE_BYTES.get(d, np.nan) for d in dtypes.tolist()], index=df.index, dtype=float)
    df["weight_bytes"] = weight_bytes_per_step(col("model_dim"), col("model_layers"), col("model_ffn_dim"),
                                               col("model_vocab"), dtype_bytes)
    df["kv_bytes_per_token"] = kv_bytes_per_token(col("model_dim"), col("model_layers"), dtype_bytes)
    df["roofline_tokens_per_s"] = roofline_tokens_per_s(df["mem_bandwidth_gb_s"], shards, col("batch"),
                                                        df["weight_bytes"], df["kv_bytes_per_token"],
                                                        df["context_tokens"])
    df["roofline_frac"] = div(col("tokens_per_s"), df["roofline_tokens_per_s"])
    df["energy_floor_per_token_j"] = div(col("idle_power_w"), df["roofline_tokens_per_s"])
    df["energy_over_floor"] = div(col("energy_per_token_j"), df["energy_floor_per_token_j"])
    df["tdp_frac"] = div(df["power_per_gpu_w"], df["tdp_w"])
    return carbon_cost(df)


J_PER_KWH = 3.6e6
DEFAULT_PUE = 1.0


def carbon_cost(points: "pd.DataFrame", intensity_g_per_kwh: float | None = None, pue: float | None = None,
                usd_per_kwh: float | None = None) -> "pd.DataFrame":
    """The points frame with CO2 and cost columns (module docstring); a factor given here replaces the points'
    own (`carbon_intensity_g_per_kwh`, `pue`, `usd_per_kwh` from their config.yaml) in every row.

    A site's factors can so be applied to results measured before they were known; the measurement is unchanged.
    """
    import numpy as np
    import pandas as pd

    df = points.copy()
    for name, given in (("carbon_intensity_g_per_kwh", intensity_g_per_kwh), ("pue", pue),
                        ("usd_per_kwh", usd_per_kwh)):
        if given is not None:
            df[name] = float(given)
        elif name not in df:
            df[name] = np.nan
        df[name] = pd.to_numeric(df[name], errors="coerce").astype(float)
    df["pue"] = df["pue"].fillna(DEFAULT_PUE)

    def col(name: str) -> pd.Series:
        return pd.to_numeric(df[name], errors="coerce").astype(float) if name in df \
            else pd.Series(np.nan, index=df.index)

    tokens = col("tokens").where(col("tokens") != 0)
    df["total_energy_j"] = col("energy_j") + col("cpu_energy_j") + col("dram_energy_j")
    for suffix, energy in (("", col("energy_j")), ("_total", df["total_energy_j"])):
        facility_kwh = energy / J_PER_KWH * df["pue"]
        df[f"co2{suffix}_g"] = facility_kwh * df["carbon_intensity_g_per_kwh"]
        df[f"co2{suffix}_per_token_g"] = df[f"co2{suffix}_g"] / tokens
        df[f"cost{suffix}_usd"] = facility_kwh * df["usd_per_kwh"]
        df[f"cost{suffix}_per_mtoken_usd"] = df[f"cost{suffix}_usd"] / tokens * 1e6
    return df


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """The q-th percentile (0-100) of the present values, interpolated linearly (numpy's default); None if none."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    at = (len(xs) - 1) * q / 100
    lo = int(at)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (at - lo)


def request_times(arrival_s: float, admitted_s: float, first_token_s: float, finished_s: float,
                  output_tokens: int) -> dict[str, float | None]:
    """One request's latencies (online points): queueing, time to first token, time per output token, latency."""
    return {
        "queue_s": admitted_s - arrival_s,
        "ttft_s": first_token_s - arrival_s,
        "tpot_s": (finished_s - first_token_s) / (output_tokens - 1) if output_tokens > 1 else None,
        "latency_s": finished_s - arrival_s,
    }


def slo_met(ttft_s: float, tpot_s: float | None, slo_ttft_s: float, slo_tpot_s: float) -> bool:
    """Goodput's test: first token within slo_ttft_s and every later token at slo_tpot_s or faster on average."""
    return ttft_s <= slo_ttft_s and (tpot_s is None or tpot_s <= slo_tpot_s)


def online_metrics(requests: list[dict], steps: list[dict], window_s: tuple[float, float],
                   energy_j: float | None, idle_power_w: float | None) -> dict:
    """Run columns of an online point over its steady window `window_s` (start, end; seconds after serving
    started). `requests`: requests.parquet rows (all); `steps`: steps.parquet rows of the window.

    tokens             = generated tokens of the window's steps; tokens_per_s, power_w, energy_per_token_j,
                         net_energy_j as for offline points (derived)
    responses          = requests that arrived in the window; their ttft/tpot/latency means and p50/p90/p99
    energy_per_response_j = mean attributed energy (energy_j of requests.parquet, whole life) of those
    achieved_rate_rps  = requests finished in the window / duration_s
    goodput_rps        = requests finished in the window that met the SLO / duration_s
    slo_attainment     = share of the requests that arrived in the window that met the SLO
    mean_live          = sequences holding a slot, averaged over the window's time
    wasted_tokens      = batch rows computed for free or prefilling slots in decode steps
    """
    start_s, end_s = window_s
    duration_s = end_s - start_s
    mine = [r for r in requests if r["in_window"]]
    finished = [r for r in requests if start_s <= r["finished_s"] < end_s]
    tokens = sum(s["new_tokens"] for s in steps)
    out = {
        "responses": len(mine), "requests": len(requests), "batches": None,
        "prompt_tokens": sum(r["prompt_tokens"] for r in mine), "tokens": tokens,
        "wasted_tokens": sum(s["rows"] - s["tokens"] for s in steps if s["kind"] == "decode"),
        "duration_s": duration_s, "energy_j": energy_j, "idle_power_w": idle_power_w,
        "achieved_rate_rps": ratio(len(finished), duration_s),
        "mean_live": ratio(sum(s["live"] * s["duration_s"] for s in steps), sum(s["duration_s"] for s in steps)),
        "goodput_rps": ratio(sum(bool(r["slo_met"]) for r in finished), duration_s),
        "slo_attainment": ratio(sum(bool(r["slo_met"]) for r in mine), len(mine)),
        "queue_s": mean_or_none(r["queue_s"] for r in mine),
    }
    for kind in ("prefill", "decode"):
        out[f"{kind}_s"] = sum(s["duration_s"] for s in steps if s["kind"] == kind)
        out[f"{kind}_energy_j"] = sum_or_none(s["energy_j"] for s in steps if s["kind"] == kind)
    for name in ("ttft", "tpot", "latency"):
        out[f"{name}_s"] = mean_or_none(r[f"{name}_s"] for r in mine)
        for q in (50, 90, 99):
            out[f"{name}_p{q}_s"] = percentile((r[f"{name}_s"] for r in mine), q)
    out.update(derived(tokens, len(mine), duration_s, energy_j, idle_power_w))
    attributed = [r["energy_j"] for r in mine]
    out["energy_per_response_j"] = mean_or_none(attributed) if None not in attributed else None
    return out
