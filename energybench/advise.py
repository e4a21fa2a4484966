"""`python -m energybench.advise <sweep dir>... [constraints]`: which configuration to run, and what it saves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from energybench.analysis.advice_text import advice_table, factors_line, front_table
from energybench.analysis.advise import Advice, Constraints, advise
from energybench.results.metrics import carbon_cost

FACTORS = (("--carbon-g-per-kwh", "intensity_g_per_kwh", "grid carbon intensity, gCO2e per kWh"),
           ("--pue", "pue", "data-centre PUE, facility over IT energy (>= 1; default: the points' own, else 1.0)"),
           ("--usd-per-kwh", "usd_per_kwh", "electricity price, USD per kWh"))


def add_factor_arguments(ap: argparse.ArgumentParser) -> None:
    """--carbon-g-per-kwh, --pue, --usd-per-kwh: a site's factors applied to existing results."""
    for flag, dest, text in FACTORS:
        ap.add_argument(flag, dest=dest, type=float, help=text + "; replaces the value in the points' config")


def factor_error(args: argparse.Namespace) -> str | None:
    """A one-line error for a factor out of range, else None."""
    for flag, dest, _ in FACTORS:
        value = getattr(args, dest)
        if value is not None and (value < 0 or (dest == "pue" and value < 1)):
            bound = ">= 1 (1.0: no facility overhead)" if dest == "pue" else ">= 0"
            return f"{flag}={value:g}: must be {bound}"
    return None


def apply_factors(points: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    return carbon_cost(points, args.intensity_g_per_kwh, args.pue, args.usd_per_kwh)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m energybench.advise",
                                 description="Per model and workload: the Pareto front of energy against latency "
                                             "and throughput, the lowest-energy configuration under your "
                                             "constraints, and what it saves against the paper's default (batch "
                                             "64, fewest shards, no cap) and the fastest point, with 95 %% "
                                             "bootstrap intervals over batches. Measured points only.")
    ap.add_argument("paths", nargs="+", type=Path, help="sweep directories (<out_dir>/<sweep>), out_dirs or points")
    for flag, text in (("--max-tpot-s", "time per output token, s"), ("--max-ttft-s", "time to first token, s"),
                       ("--max-latency-s", "time per response (one batch), s"),
                       ("--min-tokens-per-s", "generated tokens per second")):
        ap.add_argument(flag, type=float, help=("at most " if flag.startswith("--max") else "at least ") + text)
    ap.add_argument("--max-gpus", type=int, help="at most this many GPUs per job")
    ap.add_argument("--per", choices=("token", "response"), default="token", help="energy per token (default) "
                                                                                  "or per response")
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples of each point's batches (0: none)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (same seed, same numbers)")
    add_factor_arguments(ap)
    return ap


def _error(args: argparse.Namespace) -> str | None:
    for name in ("max_tpot_s", "max_ttft_s", "max_latency_s", "min_tokens_per_s", "max_gpus"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return f"--{name.replace('_', '-')}={value:g}: must be > 0"
    if args.bootstrap < 0:
        return f"--bootstrap={args.bootstrap}: must be >= 0 (0: no intervals)"
    for p in args.paths:
        if not p.expanduser().is_dir():
            return f"{p}: no such results directory; pass <out_dir>/<sweep> (e.g. results/quickstart)"
    return factor_error(args)


def render(advices: list[Advice], points: pd.DataFrame) -> str:
    """The advice as text: per workload the sentence, notes, every measured point and those not measured."""
    width = {"display.width": 200, "display.max_columns": 40, "display.max_colwidth": 60}
    out = [f"Factors: {factors_line(points)}.", ""]
    with pd.option_context(*[x for kv in width.items() for x in kv]):
        table = advice_table(advices).to_string(index=False, float_format="{:.4g}".format)
        out += ["Recommendation per workload:", table, ""]
        for a in advices:
            out += [f"== {a.label} ==", a.sentence or "Nothing to recommend."]
            out += [f"  - {n}" for n in a.notes]
            if not a.points.empty:
                out += [f"Measured points, lowest {a.energy_metric} first (on_front: no other point is at least as "
                        "good on energy, TTFT, TPOT, time per response and tokens/s, and better on one):",
                        front_table(a).to_string(index=False, float_format="{:.4g}".format)]
            if not a.not_measured.empty:
                out += ["Not measured (listed, not compared):", a.not_measured.to_string(index=False)]
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import energybench.results as results

    args = _parser().parse_args(argv)
    problem = _error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    points = apply_factors(results.points(*args.paths), args)
    if points.empty:
        print(f"error: no points under {', '.join(map(str, args.paths))}: pass a sweep directory "
              "(<out_dir>/<sweep>) or an out_dir", file=sys.stderr)
        return 2
    batches = results.batches(*args.paths, measured_only=True, with_config=False) if args.bootstrap else None
    constraints = Constraints(args.max_tpot_s, args.max_ttft_s, args.max_latency_s, args.min_tokens_per_s,
                              args.max_gpus)
    print(render(advise(points, batches, constraints, args.per, args.bootstrap, args.seed), points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
